"""Backbone registry: config name -> a Keras model from images to a feature map.

Every backbone takes float32 NHWC pixel values in [0, 255] and normalises internally.
"""

import keras

from dmml_tf.errors import ConfigError
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


BACKBONES = {"mobilenet_v2": _mobilenet_v2, "tiny_cnn": tiny_cnn}


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
