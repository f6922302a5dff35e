"""Backbone registry: config name -> a Keras model from images to a feature map.

Every backbone takes float32 NHWC pixel values in [0, 255] and normalises internally.
`mobilenet_v2` loads offline torchvision ImageNet weights; `efficientnet_b0`, `resnet50`
(the standard metric-learning backbone) and `resnet50_v2` come from keras.applications
(`weights: imagenet` or null), each behind its own `preprocess_input`; `tiny_cnn` is for
tests.
"""

import keras

from dmml_tf.errors import ConfigError, WeightsError
from dmml_tf.models.mobilenet_v2 import mobilenet_v2


def tiny_cnn(input_shape, weights=None, name="tiny_cnn", seed=0):
    """A two-convolution network for fast tests; has no pretrained weights."""
    if weights is not None:
        raise ConfigError(f"Backbone `tiny_cnn` has no pretrained weights. Received: weights={weights!r}")
    init = keras.initializers.HeNormal(seed=seed)
    inputs = keras.Input(input_shape)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    for filters in (8, 16):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", kernel_initializer=init)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
    return keras.Model(inputs, x, name=name)


def _mobilenet_v2(input_shape, weights, name, seed):
    del seed  # every randomly initialised layer lives in the head
    return mobilenet_v2(input_shape=input_shape, weights=weights, include_top=False, name=name)


def _keras_application(constructor, preprocess_input):
    """A `keras.applications` network without its classifier, fed [0, 255] RGB pixels.

    Args:
        constructor: callable. E.g. `keras.applications.ResNet50`.
        preprocess_input: callable. The network's own `keras.applications` preprocessing,
            applied inside the model so that exports take raw pixels.
    """
    def build(input_shape, weights, name, seed):
        del seed  # random initialisation draws from the global seed (keras.utils.set_random_seed)
        if weights not in (None, "imagenet"):
            raise ConfigError(f"Backbone `{constructor.__name__}` takes weights `imagenet` or null. "
                              f"Received: model.weights={weights!r}")
        try:
            network = constructor(include_top=False, weights=weights, input_shape=input_shape)
        except Exception as error:  # keras.utils.get_file fails without internet
            raise WeightsError(f"ImageNet weights of {constructor.__name__} could not be loaded "
                               f"({error}). Put the file keras.applications downloads in "
                               "~/.keras/models, or set model.weights=null.") from None
        inputs = keras.Input(input_shape)
        return keras.Model(inputs, network(preprocess_input(inputs)), name=name)

    return build


BACKBONES = {
    "mobilenet_v2": _mobilenet_v2,
    "tiny_cnn": tiny_cnn,
    "efficientnet_b0": _keras_application(keras.applications.EfficientNetB0,
                                          keras.applications.efficientnet.preprocess_input),
    # Caffe-style: RGB to BGR, minus the ImageNet channel means.
    "resnet50": _keras_application(keras.applications.ResNet50,
                                   keras.applications.resnet.preprocess_input),
    "resnet50_v2": _keras_application(keras.applications.ResNet50V2,
                                      keras.applications.resnet_v2.preprocess_input),
}


def build_backbone(name, weights, image_size, model_name=None, seed=0):
    """Build a registered backbone for square `image_size` inputs.

    Args:
        name: str. A key of `BACKBONES`.
        weights: str or None. Pretrained weights understood by that backbone.
        image_size: int. Height and width of the input images.
        model_name: str or None. Name of the returned model. Defaults to `name`.
        seed: int. Seed for any randomly initialised weights.
    """
    if name not in BACKBONES:
        raise ConfigError(f"Unknown backbone `model.backbone`. Known: {', '.join(BACKBONES)}. "
                          f"Received: model.backbone={name!r}")
    return BACKBONES[name]((image_size, image_size, 3), weights, model_name or name, seed)
