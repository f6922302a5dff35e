"""CUB-200-2011 from the official layout and from TFDS `caltech_birds2011`, on fixtures in
the published layout (tests/data/layouts.py)."""

import shutil

import numpy as np
import pytest

from dmml_tf.config import DataConfig
from dmml_tf.data import cub200
from dmml_tf.data.registry import load_dataset
from dmml_tf.errors import DataError
from tests.data import layouts


official, archives = layouts.module_fixtures(layouts.write_cub, layouts.pack_cub)


def test_official_layout_labels_and_class_names(official):
    folder, expected = official
    images, names = cub200.read_official(folder)
    assert [(int(label), layouts.digest(open(key, "rb").read()))
            for key, label in zip(images.keys, images.labels)] == expected
    assert len(names) == 200
    assert names[0] == "bird_species_1" and names[199] == "bird_species_200"


def test_split_is_classes_1_to_100_for_training(official):
    folder, expected = official
    splits = load_dataset(DataConfig(dataset="cub200", data_dir=str(folder)), seed=0, log=layouts.quiet)
    train = sorted(label for label, _ in expected if label < 100)
    test = sorted(label for label, _ in expected if label >= 100)
    assert sorted(splits.train_labels) == train and sorted(splits.test_labels) == test
    assert set(splits.train_labels) == {0, 1, 99} and set(splits.test_labels) == {100, 149, 199}


def test_tfds_route_agrees_with_the_official_layout(official, archives, monkeypatch):
    from tensorflow_datasets.image_classification.caltech_birds import CaltechBirds2011

    layouts.register_fixture_checksums(monkeypatch, CaltechBirds2011, archives)
    by_tfds = load_dataset(DataConfig(dataset="cub200", data_dir=str(archives), source="tfds"),
                           seed=0, log=layouts.quiet)
    by_files = load_dataset(DataConfig(dataset="cub200", data_dir=str(official[0]),
                                       source="official"), seed=0, log=layouts.quiet)
    assert layouts.content(by_tfds.train) == layouts.content(by_files.train)
    assert layouts.content(by_tfds.test) == layouts.content(by_files.test)
    for label in {*by_files.train_labels, *by_files.test_labels}:
        assert by_tfds.class_names[label] == by_files.class_names[label]
    # The prepared records are reused; the extracted archives are removed.
    assert (archives / "tfds/caltech_birds2011").is_dir()
    assert not (archives / "tfds/downloads").exists()


def test_tfds_rejects_archives_that_are_not_the_published_ones(archives, tmp_path):
    for name in cub200.TFDS_FILES:
        shutil.copy(archives / name, tmp_path)
    with pytest.raises(DataError, match="caltech_birds2011: .*/CUB_200_2011.tgz is not the published file"):
        load_dataset(DataConfig(dataset="cub200", data_dir=str(tmp_path), source="tfds"),
                     seed=0, log=layouts.quiet)


@pytest.mark.parametrize("source", ["auto", "official", "tfds"])
def test_missing_data_names_the_files_and_the_folder(tmp_path, source):
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(dataset="cub200", data_dir=str(tmp_path), source=source),
                     seed=0, log=layouts.quiet)
    message = str(info.value)
    assert f"no {'' if source == 'auto' else source + ' '}data in {tmp_path}" in message
    for name in ("CUB_200_2011/", "images.txt", "image_class_labels.txt", "classes.txt",
                 "CUB_200_2011.tgz", "segmentations.tgz", "data.data_dir"):
        assert name in message


def test_default_folder_is_under_dmml_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DMML_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match=f"no data in {tmp_path / 'cub200'} "):
        load_dataset(DataConfig(dataset="cub200"), seed=0, log=layouts.quiet)
    np.testing.assert_equal(cub200.TRAIN_CLASSES, 100)
