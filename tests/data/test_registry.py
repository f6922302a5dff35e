from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from dmml_tf.config import DataConfig, load_config
from dmml_tf.data.registry import (RetrievalSplits, dataset_folder, evenly_spaced, hold_out_validation,
                                   load_dataset,
                                   split_encoded)
from dmml_tf.data.sources import ArrayImages, EncodedImages
from dmml_tf.errors import ConfigError, DataError


@pytest.mark.parametrize("name", ["imagenette", "folder:", "cub200:/data", "folder"],
                         ids=["unknown", "folder_without_path", "argument_to_cub", "bare_folder"])
def test_unknown_dataset_names_are_config_errors(name):
    with pytest.raises(ConfigError, match=r"Unknown dataset `data.dataset`. Known: emoji_styles, icon_concepts, "
                                          r"cub200, cars196, folder:PATH. Received: data.dataset="):
        load_dataset(DataConfig(dataset=name), seed=0)


@pytest.mark.parametrize(
    "override, message",
    [("data.source=kaggle", "`data.source` supports: auto, official, tfds"),
     ("data.crop_scale=[0.5, 1.5]", "`data.crop_scale` must be [low, high] with 0 < low <= high <= 1"),
     ("data.crop_scale=[0.5]", "`data.crop_scale` must be [low, high]"),
     ("data.crop_ratio=[2, 1]", "`data.crop_ratio` must be [low, high] with 0 < low <= high."),
     ("data.resize_size=32", "`data.resize_size` must be 0 or at least data.image_size (64)"),
     ("data.horizontal_flip=maybe", "`data.horizontal_flip` expects bool")],
    ids=["source", "scale_above_one", "scale_one_value", "ratio_reversed", "resize_below_crop",
         "flip_not_bool"],
)
def test_data_keys_are_checked(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert message in str(info.value)


def test_dataset_folder(monkeypatch):
    monkeypatch.setenv("DMML_DATA_DIR", "/data/sets")
    assert dataset_folder(DataConfig(), "cub200") == Path("/data/sets/cub200")
    assert dataset_folder(DataConfig(data_dir="/mnt/birds"), "cub200") == Path("/mnt/birds")
    monkeypatch.delenv("DMML_DATA_DIR")
    assert dataset_folder(DataConfig(), "cars196") == Path("~/.cache/dmml_tf/cars196").expanduser()


def test_evenly_spaced():
    classes = np.arange(10, 20)
    np.testing.assert_array_equal(evenly_spaced(classes, 0), classes)
    np.testing.assert_array_equal(evenly_spaced(classes, 3), [10, 14, 19])
    np.testing.assert_array_equal(evenly_spaced(classes, 50), classes)


def encoded(tmp_path, labels):
    paths = []
    for i in range(len(labels)):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (8, 8), (i, 0, 0)).save(paths[-1])
    return EncodedImages(np.array(paths), np.asarray(labels))


def test_test_images_are_the_array_or_a_stream_in_label_order(tmp_path):
    config = DataConfig(image_size=8)
    arrays = ArrayImages(np.zeros((3, 8, 8, 3), np.uint8), np.array([0, 1, 1]))
    in_memory = RetrievalSplits("a", arrays, arrays, ("x", "y"), config)
    assert in_memory.test_images is arrays.images
    files = encoded(tmp_path, [2, 2, 3, 3, 3])
    streamed = RetrievalSplits("b", files, files, ("w", "x", "y", "z"), config, evaluate_batch_size=2)
    batches = list(streamed.test_images.as_numpy_iterator())
    assert isinstance(streamed.test_images, tf.data.Dataset) and [len(b) for b in batches] == [2, 2, 1]
    np.testing.assert_allclose(np.concatenate(batches)[:, 0, 0, 0], np.arange(5), atol=1e-3)


def test_too_few_classes_left_is_a_data_error(tmp_path):
    images = encoded(tmp_path, [0, 0, 1, 1])
    with pytest.raises(DataError, match="training needs images of at least 2 classes"):
        split_encoded("tiny", images, ("a", "b"), np.array([True, True, False, False]),
                      DataConfig(), 0, 8, log=lambda line: None)


def test_an_uneven_replica_split_is_refused_before_training(tmp_path):
    images = encoded(tmp_path, [0, 0, 1, 1, 2, 2])
    splits = split_encoded("tiny", images, ("a", "b", "c"), np.array([True] * 4 + [False] * 2),
                           DataConfig(classes_per_batch=3, images_per_class=3), 0, 8,
                           log=lambda line: None)
    with pytest.raises(ConfigError, match="split evenly across 2 replicas"):
        splits.training_dataset(seed=0, replicas=2)


@pytest.mark.parametrize("name", ["emoji_styles", "cub200", "cars196"])
def test_each_dataset_config_loads_and_names_its_dataset(name):
    config = load_config(Path(__file__).resolve().parents[2] / "configs" / f"{name}.yaml")
    assert config.data.dataset == name
    assert config.data.horizontal_flip == (name != "emoji_styles")  # arrows must not flip


def test_validation_split_holds_out_training_classes_and_keeps_groups():
    labels = np.repeat(np.arange(20), 3)
    images = ArrayImages(np.zeros((60, 4, 4, 3), np.uint8), labels)
    train_classes = np.arange(10)
    groups = tuple(f"g{c // 2}" for c in range(20))  # classes 2k and 2k+1 form a group
    splits = RetrievalSplits("toy", images.subset(np.isin(labels, train_classes)),
                             images.subset(~np.isin(labels, train_classes)),
                             tuple(map(str, range(20))), DataConfig(validation_fraction=0.4),
                             class_groups=groups)
    held_out = hold_out_validation(splits, seed=0)
    fit, validation = set(held_out.train.labels), set(held_out.test.labels)
    assert fit | validation == set(train_classes) and not fit & validation
    assert len(validation) == 4
    assert all((c ^ 1) in validation for c in validation)  # a group is never divided
    assert held_out.name == "toy (validation classes)"
