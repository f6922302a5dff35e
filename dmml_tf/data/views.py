"""Views: per-network augmentation policies built from config.

A policy is a list of `{LayerName: {argument: value}}` entries. Names resolve through
`AUGMENTATIONS`, an explicit registry of Keras preprocessing layers plus this module's
`RandomResizedCrop`. Layers see float pixel values in [0, 255] and are only active with
`training=True`, so evaluation and exported models never augment.
"""

import math

import keras
import tensorflow as tf

from dmml_tf.errors import ConfigError


@keras.saving.register_keras_serializable(package="dmml_tf")
class RandomResizedCrop(keras.layers.Layer):
    """Crop a random box (area fraction and aspect ratio sampled) and resize it back.

    The per-image boxes go through one batched `crop_and_resize`, so no per-image loop.

    Args:
        scale: pair of float. Range of the crop's area as a fraction of the image.
            Defaults to `(0.5, 1.0)`.
        ratio: pair of float. Range of the crop's aspect ratio (width / height).
            Defaults to `(3/4, 4/3)`.
        seed: int or None. Seed of the layer's random generator. Defaults to `None`.
    """

    def __init__(self, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(f"`scale` must satisfy 0 < low <= high <= 1. Received: scale={scale}")
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        n = tf.shape(images)[0]
        area = keras.random.uniform((n,), *self.scale, seed=self.seed_generator)
        log_ratio = keras.random.uniform(
            (n,), math.log(self.ratio[0]), math.log(self.ratio[1]), seed=self.seed_generator
        )
        width = tf.minimum(tf.sqrt(area * tf.exp(log_ratio)), 1.0)
        height = tf.minimum(tf.sqrt(area / tf.exp(log_ratio)), 1.0)
        offsets = keras.random.uniform((n, 2), seed=self.seed_generator)
        top = offsets[:, 0] * (1.0 - height)
        left = offsets[:, 1] * (1.0 - width)
        boxes = tf.stack([top, left, top + height, left + width], axis=1)
        size = tf.shape(images)[1:3]
        return tf.image.crop_and_resize(images, boxes, tf.range(n), size)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "ratio": self.ratio, "seed": self.seed}


AUGMENTATIONS = {
    "RandomResizedCrop": RandomResizedCrop,
    "RandomFlip": keras.layers.RandomFlip,
    "RandomRotation": keras.layers.RandomRotation,
    "RandomTranslation": keras.layers.RandomTranslation,
    "RandomZoom": keras.layers.RandomZoom,
    "RandomContrast": keras.layers.RandomContrast,
    "RandomBrightness": keras.layers.RandomBrightness,
    "RandomColorJitter": keras.layers.RandomColorJitter,
    "RandomGrayscale": keras.layers.RandomGrayscale,
    "RandomErasing": keras.layers.RandomErasing,
    "RandomGaussianBlur": keras.layers.RandomGaussianBlur,
    "RandAugment": keras.layers.RandAugment,
}


def build_view(policy, seed, name="view"):
    """A `keras.Sequential` applying `policy`'s layers in order, each with its own seed.

    Args:
        policy: sequence of single-key dicts `{LayerName: {argument: value}}`.
        seed: int. Base seed; layer i gets `seed * 1000 + i`, so networks built with
            different seeds draw independent augmentations.
        name: str. Name of the returned model.
    """
    layers = []
    for index, entry in enumerate(policy):
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ConfigError(f"Each entry of `views.policy` must be one `LayerName: {{args}}` "
                              f"mapping. Received: views.policy[{index}]={entry!r}")
        (layer_name, arguments), = entry.items()
        if layer_name not in AUGMENTATIONS:
            raise ConfigError(f"Unknown augmentation `views.policy[{index}].{layer_name}`. "
                              f"Known: {', '.join(AUGMENTATIONS)}. Received: {layer_name}")
        try:
            layers.append(AUGMENTATIONS[layer_name](**(arguments or {}), seed=seed * 1000 + index))
        except (TypeError, ValueError) as error:
            raise ConfigError(f"Bad arguments for `views.policy[{index}].{layer_name}`: {error}. "
                              f"Received: {arguments!r}") from None
    return keras.Sequential(layers, name=name)
