import numpy as np
import pytest
from PIL import Image

from dmml_tf.config import DataConfig
from dmml_tf.data.image_folder import read_image_folder
from dmml_tf.data.registry import load_dataset
from dmml_tf.errors import DataError


def save(path, mode="RGB", fmt=None, size=(10, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, "white" if mode != "L" else 200).save(path, fmt)


def make_classes(root, counts):
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            save(root / name / f"{i}.png")


def test_every_format_and_depth_is_found_and_other_files_ignored(tmp_path):
    save(tmp_path / "cat/a.jpg")
    save(tmp_path / "cat/b.JPEG")
    save(tmp_path / "cat/nested/c.png", mode="RGBA")
    save(tmp_path / "dog/d.bmp")
    save(tmp_path / "dog/e.gif", mode="P")
    save(tmp_path / "dog/f.png", mode="L")
    (tmp_path / "dog/readme.txt").write_text("not an image")
    (tmp_path / "dog/.hidden.jpg").write_text("hidden")
    (tmp_path / "stray.jpg").write_bytes(b"")  # not in a class folder
    images, names, in_train, notes = read_image_folder(tmp_path)
    assert names == ("cat", "dog")
    found = {p.split(str(tmp_path) + "/")[1]: label for p, label in zip(images.keys, images.labels)}
    assert found == {"cat/a.jpg": 0, "cat/b.JPEG": 0, "cat/nested/c.png": 0,
                     "dog/d.bmp": 1, "dog/e.gif": 1, "dog/f.png": 1}
    assert in_train is None and notes == []


def test_train_and_test_folders_are_used_as_given(tmp_path):
    make_classes(tmp_path / "train", {"a": 2, "b": 3})
    make_classes(tmp_path / "test", {"c": 2, "d": 2, "e": 0})
    images, names, in_train, notes = read_image_folder(tmp_path)
    assert names == ("a", "b", "c", "d", "e")
    np.testing.assert_array_equal(images.labels, [0, 0, 1, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(in_train, [True] * 5 + [False] * 4)
    assert notes == [f"{tmp_path / 'test' / 'e'}: no images, class skipped"]
    splits = load_dataset(DataConfig(dataset=f"folder:{tmp_path}"), seed=0, log=lambda line: None)
    assert sorted(set(splits.train_labels)) == [0, 1] and sorted(set(splits.test_labels)) == [2, 3]


@pytest.mark.parametrize("classes", [{"train": 2, "plane": 3, "car": 2},
                                     {"train": 2, "test": 2, "car": 2}, {"train": 3}],
                         ids=["train", "train_and_test", "train_alone"])
def test_a_class_named_train_or_test_beside_other_folders_is_a_class(tmp_path, classes):
    make_classes(tmp_path, classes)
    images, names, in_train, _ = read_image_folder(tmp_path)
    assert names == tuple(sorted(classes)) and in_train is None
    assert len(images.labels) == sum(classes.values())
    if len(classes) > 1:  # a seeded split by class, `train` one of them
        splits = load_dataset(DataConfig(dataset=f"folder:{tmp_path}", test_fraction=0.34),
                              seed=0, log=lambda line: None)
        assert len({*splits.train_labels, *splits.test_labels}) == len(classes)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_without_train_and_test_a_seeded_class_disjoint_split(tmp_path, seed):
    make_classes(tmp_path, {f"class{i}": 2 + i % 3 for i in range(10)})
    config = DataConfig(dataset=f"folder:{tmp_path}", test_fraction=0.3)
    splits = load_dataset(config, seed=seed, log=lambda line: None)
    again = load_dataset(config, seed=seed, log=lambda line: None)
    train, test = set(splits.train_labels), set(splits.test_labels)
    assert not train & test and len(train | test) == 10 and len(test) == 3
    np.testing.assert_array_equal(splits.test.keys, again.test.keys)
    assert len(splits.train_labels) + len(splits.test_labels) == sum(2 + i % 3 for i in range(10))


def test_max_classes_keeps_evenly_spaced_classes(tmp_path):
    make_classes(tmp_path, {f"class{i:02d}": 2 for i in range(12)})
    config = DataConfig(dataset=f"folder:{tmp_path}", max_classes=4)
    splits = load_dataset(config, seed=0, log=lambda line: None)
    assert sorted({*splits.train_labels, *splits.test_labels}) == [0, 4, 7, 11]


@pytest.mark.parametrize(
    "layout, message",
    [({}, "Image folder not found"),
     ({"a": 0, "b": 0}, "No JPEG, PNG, BMP or GIF images found")],
    ids=["missing", "no_images"],
)
def test_unusable_folders_are_data_errors(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout:
        make_classes(root, layout)
    with pytest.raises(DataError, match=message):
        read_image_folder(root)
