"""CARS-196 (Stanford Cars): 16,185 photos of 196 car models.

Metric learning protocol: classes 1-98 train (8,054 images), 99-196 test (8,131). Read
from either official layout (`cars_annos.mat` with `car_ims/`, or the devkit release) or,
offline, by the TFDS builder `cars196` from the published archives.
"""

from pathlib import Path

import numpy as np
import scipy.io

from dmml_tf.data.sources import EncodedImages
from dmml_tf.data.tfds_source import pick_source, prepare, read_records

NAME = "cars196"
TRAIN_CLASSES = 98
TFDS_NAME = "cars196"
ALL_IMAGES = ("cars_annos.mat", "car_ims")
DEVKIT = ("cars_train", "cars_test", "devkit/cars_train_annos.mat", "devkit/cars_meta.mat",
          "cars_test_annos_withlabels.mat")
TFDS_FILES = ("cars_train.tgz", "cars_test.tgz", "car_devkit.tgz", "cars_test_annos_withlabels.mat")
HELP = ("Obtain Stanford Cars (CARS-196) and put in that folder (or set data.data_dir to "
        "a folder holding them) either cars_annos.mat with the folder car_ims/, or the "
        "extracted devkit release: cars_train/, cars_test/, devkit/cars_train_annos.mat, "
        "devkit/cars_meta.mat and cars_test_annos_withlabels.mat, or, for TFDS (cars196), the "
        "files cars_train.tgz, cars_test.tgz, car_devkit.tgz and "
        "cars_test_annos_withlabels.mat as published. Nothing is downloaded.")


def _mat(path, key):
    """`key` of a MATLAB file, as a 1-D array (struct arrays keep their field names)."""
    return np.atleast_1d(scipy.io.loadmat(path, squeeze_me=True)[key])


def _names(values):
    return tuple(str(name).strip() for name in values)


def read_all_images(folder):
    """`cars_annos.mat` + `car_ims/`: every image, its class, ignoring the `test` flag."""
    annotations = _mat(Path(folder) / "cars_annos.mat", "annotations")
    keys = np.array([str(Path(folder) / p) for p in annotations["relative_im_path"]])
    labels = annotations["class"].astype(np.int64) - 1
    return EncodedImages(keys, labels), _names(_mat(Path(folder) / "cars_annos.mat", "class_names"))


def read_devkit(folder):
    """`cars_train/`, `cars_test/` and their annotation files."""
    folder = Path(folder)
    keys, labels = [], []
    for images, annotations in (("cars_train", "devkit/cars_train_annos.mat"),
                                ("cars_test", "cars_test_annos_withlabels.mat")):
        rows = _mat(folder / annotations, "annotations")
        keys += [str(folder / images / name) for name in rows["fname"]]
        labels += list(rows["class"].astype(np.int64) - 1)
    names = _names(_mat(folder / "devkit/cars_meta.mat", "class_names"))
    return EncodedImages(np.array(keys), np.array(labels, dtype=np.int64)), names


def read_tfds(folder, log=print):
    """Images and class names from TFDS `cars196` prepared from the archives."""
    builder = prepare(TFDS_NAME, folder, log)
    images, _ = read_records(builder, [])
    return images, tuple(builder.info.features["label"].names)


def load(folder, source, log=print):
    """`(images, class_names)` of CARS-196 from `folder` by the route `source` picks."""
    route, layout = pick_source(NAME, folder, source, [ALL_IMAGES, DEVKIT], TFDS_FILES, HELP)
    log(f"      {NAME}: {route} files in {folder} ({', '.join(layout)})")
    if route == "tfds":
        return read_tfds(folder, log)
    return read_all_images(folder) if layout == ALL_IMAGES else read_devkit(folder)
