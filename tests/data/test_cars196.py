"""CARS-196 from both official layouts and from TFDS `cars196`, on fixtures in the
published layouts (tests/data/layouts.py)."""

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from dmml_tf.config import DataConfig
from dmml_tf.data import cars196
from dmml_tf.data.registry import load_dataset
from dmml_tf.errors import DataError
from tests.data import layouts

ROOT = Path(__file__).resolve().parents[2]


official, archives = layouts.module_fixtures(layouts.write_cars, layouts.pack_cars)


def only(folder, names, destination):
    """A copy of `folder` holding only `names`: one layout on its own."""
    for name in names:
        copy = shutil.copytree if (folder / name).is_dir() else shutil.copy
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        copy(folder / name, destination / name)
    return destination


@pytest.mark.parametrize("reader, layout", [(cars196.read_all_images, cars196.ALL_IMAGES),
                                            (cars196.read_devkit, cars196.DEVKIT)],
                         ids=["cars_annos", "devkit"])
def test_both_official_layouts_give_the_same_images_and_labels(official, tmp_path, reader, layout):
    folder, expected = official
    images, names = reader(only(folder, layout, tmp_path))
    assert layouts.content(images) == Counter(expected)
    assert names == tuple(layouts.cars_class_names()) and len(names) == 196


@pytest.mark.parametrize("layout", [cars196.ALL_IMAGES, cars196.DEVKIT], ids=["cars_annos", "devkit"])
def test_split_is_classes_1_to_98_for_training(official, tmp_path, layout):
    folder, expected = official
    config = DataConfig(dataset="cars196", data_dir=str(only(folder, layout, tmp_path)))
    splits = load_dataset(config, seed=0, log=layouts.quiet)
    assert layouts.content(splits.train) == Counter(e for e in expected if e[0] < 98)
    assert layouts.content(splits.test) == Counter(e for e in expected if e[0] >= 98)
    assert set(splits.train_labels) == {0, 1, 97} and set(splits.test_labels) == {98, 149, 195}


def test_tfds_route_agrees_with_the_official_layouts(official, archives, monkeypatch):
    from tensorflow_datasets.image_classification.cars196 import Cars196

    layouts.register_fixture_checksums(monkeypatch, Cars196, archives)
    by_tfds = load_dataset(DataConfig(dataset="cars196", data_dir=str(archives)), seed=0, log=layouts.quiet)
    by_files = load_dataset(DataConfig(dataset="cars196", data_dir=str(official[0]),
                                       source="official"), seed=0, log=layouts.quiet)
    assert by_tfds.train.keys.dtype.kind == "i"  # TFDS records, not files
    assert layouts.content(by_tfds.train) == layouts.content(by_files.train)
    assert layouts.content(by_tfds.test) == layouts.content(by_files.test)
    assert by_tfds.class_names == by_files.class_names


def test_tfds_rejects_archives_that_are_not_the_published_ones(archives, tmp_path):
    for name in cars196.TFDS_FILES:
        shutil.copy(archives / name, tmp_path)
    with pytest.raises(DataError, match=r"cars196: .*/car\w*\.(tgz|mat) is not the published file"):
        load_dataset(DataConfig(dataset="cars196", data_dir=str(tmp_path)), seed=0, log=layouts.quiet)


@pytest.mark.slow
def test_main_without_the_data_exits_with_the_files_to_obtain(tmp_path):
    env = {**os.environ, "DMML_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "--dataset", "cars196"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: cars196: no data in {tmp_path / 'data' / 'cars196'} ")
    for name in ("cars_annos.mat", "car_ims/", "cars_train/", "cars_test/",
                 "devkit/cars_train_annos.mat", "devkit/cars_meta.mat",
                 "cars_test_annos_withlabels.mat", "cars_train.tgz", "cars_test.tgz",
                 "car_devkit.tgz"):
        assert name in error
    assert "Traceback" not in result.stderr
