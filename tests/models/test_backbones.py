from pathlib import Path

import keras
import numpy as np
import pytest

from dmml_tf.errors import ConfigError, WeightsError
from dmml_tf.models.backbones import build_backbone


def _caffe_reference(images):
    """keras.applications' ResNet-50 input, written out: BGR minus the ImageNet means."""
    bgr = images[..., ::-1]
    return bgr - np.array([103.939, 116.779, 123.68], "float32")


@pytest.mark.parametrize("name, reference", [
    ("resnet50", _caffe_reference),
    ("resnet50_v2", lambda images: images / 127.5 - 1.0),
    ("efficientnet_b0", lambda images: images),  # EfficientNet normalises inside the network
])
def test_keras_application_backbone_takes_raw_pixels(name, reference):
    backbone = build_backbone(name, weights=None, image_size=32)
    network = backbone.layers[-1]  # the keras.applications model, fed preprocessed pixels
    assert isinstance(network, keras.Model)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(backbone(images).numpy(), network(reference(images)).numpy(),
                               rtol=1e-5, atol=1e-4)
    assert backbone.name == name


def test_imagenet_weights_unavailable_gives_a_weights_error_naming_the_way_out():
    # Without internet (this machine), keras.utils.get_file cannot fetch the weights file.
    if list(Path("~/.keras/models").expanduser().glob("resnet50_weights*")):
        pytest.skip("the ResNet-50 weights are cached on this machine")
    with pytest.raises(WeightsError, match=r"ResNet50.*~/\.keras/models.*model\.weights=null"):
        build_backbone("resnet50", weights="imagenet", image_size=32)


def test_unknown_weights_or_backbone_is_a_config_error():
    with pytest.raises(ConfigError, match="takes weights `imagenet` or null.*'torchvision'"):
        build_backbone("resnet50", weights="torchvision", image_size=32)
    with pytest.raises(ConfigError, match="Known: .*resnet50.*Received: model.backbone='resnet101'"):
        build_backbone("resnet101", weights=None, image_size=32)
