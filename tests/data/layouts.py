"""Small datasets in the exact layouts of CUB-200-2011 and CARS-196 as published (real
JPEGs, real MATLAB files written with scipy), and the archives TFDS reads from its
manual dir. Each image is a few hundred bytes of random pixels, so every one differs."""

import hashlib
import io
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

# class id -> number of images; classes on both sides of each split boundary.
CUB_IMAGES = {1: 2, 2: 3, 100: 2, 101: 2, 150: 1, 200: 3}
CARS_IMAGES = {1: 3, 2: 2, 98: 2, 99: 2, 150: 1, 196: 3}


def jpeg_bytes(seed, size=(40, 30)):
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def digest(data):
    return hashlib.sha1(data).hexdigest()


def content(source):
    """Multiset of (label, sha1 of the stored image) over a split (`EncodedImages`)."""
    return Counter((int(label), digest(source.read(key).numpy()))
                   for key, label in zip(source.keys, source.labels))


def quiet(line):
    """A `log` that drops the line."""


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _tgz(archive, folder, member):
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder / member, arcname=member)


def write_cub(folder):
    """`folder/CUB_200_2011/` as extracted from CUB_200_2011.tgz.

    Returns:
        list of `(label, sha1 of the JPEG)`, label = class id - 1, in image id order.
    """
    root = Path(folder) / "CUB_200_2011"
    names = {c: f"{c:03d}.Bird_Species_{c}" for c in range(1, 201)}
    images, labels, splits, boxes, expected = [], [], [], [], []
    image_id = 0
    for class_id, count in CUB_IMAGES.items():
        for k in range(count):
            image_id += 1
            relative = f"{names[class_id]}/Bird_Species_{class_id}_{k:04d}_{image_id}.jpg"
            data = jpeg_bytes(image_id)
            _write(root / "images" / relative, data)
            images.append(f"{image_id} {relative}")
            labels.append(f"{image_id} {class_id}")
            splits.append(f"{image_id} {image_id % 2}")
            boxes.append(f"{image_id} 2.0 3.0 20.0 15.0")
            expected.append((class_id - 1, digest(data)))
    files = {"images.txt": images, "image_class_labels.txt": labels,
             "train_test_split.txt": splits, "bounding_boxes.txt": boxes,
             "classes.txt": [f"{c} {name}" for c, name in names.items()]}
    for name, lines in files.items():
        (root / name).write_text("\n".join(lines) + "\n")
    return expected


def pack_cub(folder, manual):
    """`CUB_200_2011.tgz` and `segmentations.tgz` (a PNG mask per image) in `manual`."""
    folder, manual = Path(folder), Path(manual)
    _tgz(manual / "CUB_200_2011.tgz", folder, "CUB_200_2011")
    for jpeg in (folder / "CUB_200_2011/images").rglob("*.jpg"):
        mask = folder / "segmentations" / jpeg.parent.name / f"{jpeg.stem}.png"
        mask.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((30, 40), 255, dtype=np.uint8)).save(mask)
    _tgz(manual / "segmentations.tgz", folder, "segmentations")


def _annotations(rows, fields):
    """A MATLAB 1 x N struct array with `fields`, one row per tuple."""
    table = np.zeros((1, len(rows)), dtype=[(field, object) for field in fields])
    for i, row in enumerate(rows):
        for field, value in zip(fields, row):
            table[0, i][field] = np.array([value]) if isinstance(value, str) else np.array([[value]])
    return table


def _cell(strings):
    cell = np.empty((1, len(strings)), dtype=object)
    cell[0, :] = strings
    return cell


def cars_class_names():
    from tensorflow_datasets.image_classification.cars196 import _NAMES
    return list(_NAMES)


def write_cars(folder):
    """Both official layouts of CARS-196 in `folder`, holding the same JPEGs: the devkit
    release (`cars_train/`, `cars_test/`, `devkit/`, `cars_test_annos_withlabels.mat`) and
    the all-images release (`cars_annos.mat`, `car_ims/`).

    Returns:
        list of `(label, sha1 of the JPEG)`, label = class id - 1.
    """
    folder = Path(folder)
    box = (1, 2, 30, 20)
    devkit_fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    rows = {"cars_train": [], "cars_test": []}
    all_rows, expected = [], []
    for class_id, count in CARS_IMAGES.items():
        for k in range(count):
            side = "cars_test" if k % 2 else "cars_train"
            fname = f"{len(rows[side]) + 1:05d}.jpg"
            data = jpeg_bytes(1000 + len(all_rows))
            _write(folder / side / fname, data)
            rows[side].append((*box, class_id, fname))
            relative = f"car_ims/{len(all_rows) + 1:06d}.jpg"
            _write(folder / relative, data)
            all_rows.append((relative, *box, class_id, int(side == "cars_test")))
            expected.append((class_id - 1, digest(data)))
    (folder / "devkit").mkdir(exist_ok=True)
    names = _cell(cars_class_names())
    scipy.io.savemat(folder / "devkit/cars_train_annos.mat",
                     {"annotations": _annotations(rows["cars_train"], devkit_fields)})
    scipy.io.savemat(folder / "cars_test_annos_withlabels.mat",
                     {"annotations": _annotations(rows["cars_test"], devkit_fields)})
    scipy.io.savemat(folder / "devkit/cars_meta.mat", {"class_names": names})
    all_fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    scipy.io.savemat(folder / "cars_annos.mat",
                     {"annotations": _annotations(all_rows, all_fields), "class_names": names})
    return expected


def pack_cars(folder, manual):
    """The four files TFDS `cars196` reads, in `manual`."""
    folder, manual = Path(folder), Path(manual)
    for archive, member in (("cars_train.tgz", "cars_train"), ("cars_test.tgz", "cars_test"),
                            ("car_devkit.tgz", "devkit")):
        _tgz(manual / archive, folder, member)
    shutil.copy(folder / "cars_test_annos_withlabels.mat", manual)


def register_fixture_checksums(monkeypatch, builder_class, manual):
    """Make TFDS accept the fixture archives: replace the checksums it registers for the
    published files by those of the files in `manual` (same URLs and file names)."""
    from tensorflow_datasets.core.download import checksums

    registered = builder_class.url_infos
    replaced = {}
    for url, info in registered.items():
        path = Path(manual) / info.filename
        if path.exists():
            computed = checksums.compute_url_info(path)
            replaced[url] = checksums.UrlInfo(computed.size, computed.checksum, info.filename)
    monkeypatch.setattr(builder_class, "url_infos", replaced)


def module_fixtures(write, pack):
    """Module-scoped pytest fixtures: `official`, `(folder, expected)` from `write`, and
    `archives`, the folder of TFDS manual files that `pack` makes from it."""
    @pytest.fixture(scope="module")
    def official(tmp_path_factory):
        folder = tmp_path_factory.mktemp("official")
        return folder, write(folder)

    @pytest.fixture(scope="module")
    def archives(official, tmp_path_factory):
        manual = tmp_path_factory.mktemp("archives")
        pack(official[0], manual)
        return manual

    return official, archives
