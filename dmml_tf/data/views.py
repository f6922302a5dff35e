"""Views: per-network augmentation policies built from config.

A policy is a list of `{LayerName: {argument: value}}` entries. Names resolve through
an explicit registry: Keras 3's image preprocessing layers, this module's
`RandomResizedCrop` and, when keras-cv is installed, the preprocessing layers of
`keras_cv.layers` that Keras lacks. Layers see float pixel values in [0, 255] and are
only active with `training=True`, so evaluation and exported models never augment.
"""

import inspect
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
        boxes = tf.cast(tf.stack([top, left, top + height, left + width], axis=1), "float32")
        size = tf.shape(images)[1:3]
        resized = tf.image.crop_and_resize(images, boxes, tf.range(n), size)
        return tf.cast(resized, images.dtype)  # float32 out of crop_and_resize

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "ratio": self.ratio, "seed": self.seed}


def _preprocessing_layers(module, module_prefix):
    """Every public `keras.layers.Layer` class of `module` defined under `module_prefix`."""
    return {name: value for name, value in vars(module).items()
            if inspect.isclass(value) and issubclass(value, keras.layers.Layer)
            and value.__module__.startswith(module_prefix)}


# Keras 3's image preprocessing layers (RandomFlip, RandomColorJitter, RandAugment,
# RandomGrayscale, RandomErasing, ...) and this module's RandomResizedCrop.
AUGMENTATIONS = {
    **_preprocessing_layers(keras.layers, "keras.src.layers.preprocessing.image_preprocessing"),
    "RandomResizedCrop": RandomResizedCrop,
}


def augmentation_registry():
    """`AUGMENTATIONS`, plus the preprocessing layers of `keras_cv.layers` that Keras lacks
    when keras-cv is installed."""
    try:
        import keras_cv
    except ImportError:
        return dict(AUGMENTATIONS)
    extra = _preprocessing_layers(keras_cv.layers, "keras_cv")
    return {**{name: layer for name, layer in extra.items() if "preprocessing" in layer.__module__},
            **AUGMENTATIONS}


def build_view(policy, seed, name="view", key="views.policy"):
    """A `keras.Sequential` applying `policy`'s layers in order, each with its own seed.

    Args:
        policy: sequence of single-key dicts `{LayerName: {argument: value}}`.
        seed: int. Base seed; layer i gets `seed * 1000 + i` (if it takes a seed), so
            networks built with different seeds draw independent augmentations.
        name: str. Name of the returned model. Defaults to `"view"`.
        key: str. The config key of `policy`, for error messages. Defaults to
            `"views.policy"`.
    """
    registry = augmentation_registry()
    layers = []
    for index, entry in enumerate(policy):
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ConfigError(f"Each entry of `{key}` must be one `LayerName: {{args}}` "
                              f"mapping. Received: {key}[{index}]={entry!r}")
        (layer_name, arguments), = entry.items()
        if layer_name not in registry:
            raise ConfigError(f"Unknown augmentation `{key}[{index}].{layer_name}`. "
                              f"Known: {', '.join(sorted(registry))}. Received: {layer_name}")
        layer_class = registry[layer_name]
        arguments = dict(arguments or {})
        if "seed" in inspect.signature(layer_class).parameters:
            arguments["seed"] = seed * 1000 + index
        try:
            layers.append(layer_class(**arguments))
        except (TypeError, ValueError) as error:
            raise ConfigError(f"Bad arguments for `{key}[{index}].{layer_name}`: {error}. "
                              f"Received: {entry[layer_name]!r}") from None
    # An empty policy is no augmentation (a Sequential without layers cannot be called).
    return keras.Sequential(layers or [keras.layers.Identity()], name=name)


def build_views(views_config, members, seed):
    """One view per network, members first, then shadows; network n gets seed
    `seed * 100 + n`.

    Args:
        views_config: `ViewsConfig`. `network_policies` holds one policy per member (its
            shadow uses the same) or one per network, each a policy or the name of one
            (`policy`, `strong_policy`); empty, every network uses `policy`.
        members: int. Number of members M; there are 2 * M networks.
        seed: int. The run's seed.
    """
    own = views_config.network_policies
    named = {"policy": views_config.policy, "strong_policy": views_config.strong_policy}
    if not own:
        policies = [(views_config.policy, "views.policy")] * (2 * members)
    elif len(own) in (members, 2 * members):
        policies = []
        for i, policy in enumerate(own):
            key = f"views.network_policies[{i}]"
            if isinstance(policy, str):
                if policy not in named:
                    raise ConfigError(f"Config key `{key}` names a policy of `views`: "
                                      f"{', '.join(named)}. Received: {key}={policy!r}")
                policy, key = named[policy], f"views.{policy}"
            policies.append((policy, key))
        policies *= 2 * members // len(own)
    else:
        raise ConfigError(f"Config key `views.network_policies` needs one policy per member "
                          f"({members}) or per network ({2 * members}). "
                          f"Received: {len(own)} policies")
    return [build_view(policy, seed * 100 + n, f"view{n}", key)
            for n, (policy, key) in enumerate(policies)]


def check_views(views_config, members):
    """Raise the `ConfigError` that `build_views` would, before a run does any work."""
    build_views(views_config, members, seed=0)
