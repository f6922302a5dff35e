"""CUB-200-2011 (Caltech-UCSD Birds): 11,788 photos of 200 bird species.

Metric learning protocol: classes 1-100 train (5,864 images), 101-200 test (5,924).
Read from the official extracted layout or, offline, by the TFDS builder
`caltech_birds2011` from the published archives.
"""

from pathlib import Path

import numpy as np

from dmml_tf.data.sources import EncodedImages
from dmml_tf.data.tfds_source import pick_source, prepare, read_records

NAME = "cub200"
TRAIN_CLASSES = 100
TFDS_NAME = "caltech_birds2011"
OFFICIAL = ("CUB_200_2011/images.txt", "CUB_200_2011/image_class_labels.txt",
            "CUB_200_2011/classes.txt", "CUB_200_2011/images")
TFDS_FILES = ("CUB_200_2011.tgz", "segmentations.tgz")
HELP = ("Obtain CUB-200-2011 and put in that folder (or set data.data_dir to a folder holding "
        "them) either the extracted archive CUB_200_2011/ (with images.txt, "
        "image_class_labels.txt, classes.txt and images/), or, for TFDS (caltech_birds2011), "
        "the archives CUB_200_2011.tgz and segmentations.tgz as published. Nothing is "
        "downloaded.")


def class_name(folder_name):
    """`"001.Black_footed_Albatross"` -> `"black_footed_albatross"` (as TFDS names it)."""
    return folder_name.split(".", 1)[-1].lower()


def _table(path):
    """Rows of a whitespace-separated `<id> <value>` file as a dict."""
    rows = (line.split(maxsplit=1) for line in Path(path).read_text().splitlines() if line.strip())
    return {key: value.strip() for key, value in rows}


def read_official(folder):
    """Images and class names from `<folder>/CUB_200_2011/`; labels are class id - 1."""
    root = Path(folder) / "CUB_200_2011"
    paths = _table(root / "images.txt")
    classes = _table(root / "image_class_labels.txt")
    names = _table(root / "classes.txt")
    ids = sorted(paths, key=int)
    keys = np.array([str(root / "images" / paths[i]) for i in ids])
    labels = np.array([int(classes[i]) - 1 for i in ids], dtype=np.int64)
    return EncodedImages(keys, labels), tuple(class_name(names[c]) for c in sorted(names, key=int))


def read_tfds(folder, log=print):
    """Images and class names from TFDS `caltech_birds2011` prepared from the archives."""
    images, values = read_records(prepare(TFDS_NAME, folder, log), ["label_name"])
    names = {int(label): str(name, "utf-8") if isinstance(name, bytes) else str(name)
             for label, name in zip(values["label"], values["label_name"])}
    return images, tuple(names.get(label, f"class {label + 1}") for label in range(200))


def load(folder, source, log=print):
    """`(images, class_names)` of CUB-200-2011 from `folder` by the route `source` picks."""
    route, layout = pick_source(NAME, folder, source, [OFFICIAL], TFDS_FILES, HELP)
    log(f"      {NAME}: {route} files in {folder} ({', '.join(layout)})")
    return read_official(folder) if route == "official" else read_tfds(folder, log)
