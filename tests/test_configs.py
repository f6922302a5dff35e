from pathlib import Path

import pytest

from dmml_tf.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda path: path.stem)
def test_every_shipped_config_loads(path):
    config = load_config(path)
    assert config.data.dataset == path.stem


@pytest.mark.parametrize("dataset", ["cub200", "cars196"])
def test_paper_configs_follow_the_standard_protocol(dataset):
    config = load_config(CONFIGS / f"{dataset}.yaml")
    # ImageNet-pretrained ResNet-50 from keras.applications, 512-d, 224 crops from 256,
    # P x K batches, triplet margin 0.2.
    assert (config.model.backbone, config.model.weights) == ("resnet50", "imagenet")
    assert config.model.embedding_dim == 512
    assert (config.data.image_size, config.data.resize_size) == (224, 256)
    assert config.data.images_per_class > 1 and config.data.classes_per_batch > 1
    assert config.loss.margin == pytest.approx(0.2)


def test_choices_of_upper_layers_agree_with_their_registries():
    from dmml_tf import config
    from dmml_tf.data.registry import DATASETS
    from dmml_tf.retrieval.index import BACKENDS
    from dmml_tf.training.distribute import STRATEGIES
    from dmml_tf.training.optimizers import SCHEDULES

    assert [name.partition(":")[0] for name in config.DATASETS] == list(DATASETS)
    assert config.BACKENDS == BACKENDS
    assert config.SCHEDULES == tuple(SCHEDULES)
    assert config.STRATEGIES == tuple(STRATEGIES)
