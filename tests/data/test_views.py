import sys
import types

import keras
import numpy as np
import pytest

from dmml_tf.config import ViewsConfig, load_config
from dmml_tf.data.views import AUGMENTATIONS, RandomResizedCrop, build_view, build_views
from dmml_tf.errors import ConfigError

IMAGES = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")


def layer_names(view):
    return [type(layer).__name__ for layer in view.layers]


def test_registry_holds_keras_image_preprocessing_layers_only():
    for name in ("RandomColorJitter", "RandAugment", "RandomGrayscale", "RandomErasing",
                 "RandomFlip", "RandomRotation", "RandomSharpness", "Solarization"):
        assert AUGMENTATIONS[name] is vars(keras.layers)[name]
    assert AUGMENTATIONS["RandomResizedCrop"] is RandomResizedCrop
    assert "Dense" not in AUGMENTATIONS and "StringLookup" not in AUGMENTATIONS


def test_a_policy_from_yaml_builds_its_layers_with_arguments(tmp_path):
    path = tmp_path / "views.yaml"
    path.write_text(
        "views:\n"
        "  policy:\n"
        "    - RandomColorJitter: {value_range: [0, 255], brightness_factor: 0.3}\n"
        "    - RandAugment: {value_range: [0, 255], num_ops: 1}\n"
        "    - RandomErasing: {factor: 1.0, scale: [0.1, 0.2], value_range: [0, 255]}\n"
        "    - RandomGrayscale: {factor: 1.0}\n")
    view = build_view(load_config(path).views.policy, seed=3)
    assert layer_names(view) == ["RandomColorJitter", "RandAugment", "RandomErasing",
                                 "RandomGrayscale"]
    assert view.layers[0].brightness_factor == 0.3 and view.layers[1].num_ops == 1
    out = np.asarray(view(IMAGES, training=True))
    assert out.shape == IMAGES.shape
    np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-3)  # grey after RandomGrayscale
    np.testing.assert_array_equal(np.asarray(view(IMAGES, training=False)), IMAGES)


def test_layers_get_seeds_so_views_differ_and_repeat():
    policy = [{"RandomResizedCrop": {"scale": [0.3, 0.6]}}]
    first = np.asarray(build_view(policy, seed=1)(IMAGES, training=True))
    again = np.asarray(build_view(policy, seed=1)(IMAGES, training=True))
    other = np.asarray(build_view(policy, seed=2)(IMAGES, training=True))
    np.testing.assert_allclose(first, again)
    assert np.abs(first - other).mean() > 1.0


@pytest.mark.parametrize(
    "policy, key, message",
    [([{"RandomFlip": {}}, {"RandomSpin": {}}], "views.policy",
      "Unknown augmentation `views.policy[1].RandomSpin`"),
     ([{"RandomFlip": {"colour": "red"}}], "views.network_policies[1]",
      "Bad arguments for `views.network_policies[1][0].RandomFlip`"),
     ([{"RandomFlip": {}, "RandomZoom": {}}], "views.policy",
      "Each entry of `views.policy` must be one `LayerName: {args}` mapping")],
    ids=["unknown_name", "bad_argument", "two_layers_in_one_entry"],
)
def test_config_errors_name_the_key(policy, key, message):
    with pytest.raises(ConfigError) as info:
        build_view(policy, seed=0, key=key)
    assert message in str(info.value)


def test_keras_cv_layers_are_found_when_keras_cv_is_installed(monkeypatch):
    class FancyShear(keras.layers.Layer):
        def __init__(self, amount=1.0, seed=None, **kwargs):
            super().__init__(**kwargs)
            self.amount, self.seed = amount, seed

        def call(self, images, training=True):
            return images + self.amount

    FancyShear.__module__ = "keras_cv.src.layers.preprocessing.fancy_shear"
    fake = types.ModuleType("keras_cv")
    fake.layers = types.SimpleNamespace(FancyShear=FancyShear, RandomFlip=FancyShear)
    policy = [{"FancyShear": {"amount": 2.0}}, {"RandomFlip": {"mode": "vertical"}}]
    with pytest.raises(ConfigError, match="Unknown augmentation `views.policy\\[0\\].FancyShear`"):
        build_view(policy, seed=0)
    monkeypatch.setitem(sys.modules, "keras_cv", fake)
    view = build_view(policy, seed=5)
    assert isinstance(view.layers[0], FancyShear) and view.layers[0].seed == 5000
    assert isinstance(view.layers[1], keras.layers.RandomFlip)  # Keras's own layer wins


@pytest.mark.parametrize(
    "network_policies, expected",
    [((), ["A", "A", "A", "A"]), (("A", "B"), ["A", "B", "A", "B"]),
     (("A", "B", "C", "D"), ["A", "B", "C", "D"])],
    ids=["shared", "per_member", "per_network"],
)
def test_build_views_gives_each_network_its_policy(network_policies, expected):
    policies = {"A": [{"RandomFlip": {}}], "B": [{"RandomGrayscale": {}}],
                "C": [{"RandomErasing": {}}], "D": [{"RandomZoom": {"height_factor": 0.1}}]}
    config = ViewsConfig(policy=tuple(policies["A"]),
                         network_policies=tuple(policies[p] for p in network_policies))
    views = build_views(config, members=2, seed=1)
    assert [layer_names(v) for v in views] == [layer_names(build_view(policies[p], 0))
                                               for p in expected]
    assert [v.name for v in views] == ["view0", "view1", "view2", "view3"]
    assert [v.layers[0].seed for v in views] == [100_000, 101_000, 102_000, 103_000]


def test_build_views_rejects_a_wrong_number_of_policies():
    config = ViewsConfig(network_policies=([{"RandomFlip": {}}],) * 3)
    with pytest.raises(ConfigError, match="`views.network_policies` needs one policy per member "
                                          r"\(2\) or per network \(4\). Received: 3 policies"):
        build_views(config, members=2, seed=0)
