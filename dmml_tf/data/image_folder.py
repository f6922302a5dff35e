"""`folder:PATH`: the user's own images, one subfolder per class.

    PATH/<class>/<image>            a seeded class-disjoint split (data.test_fraction)
    PATH/train/<class>/<image>      or the user's split, used as it is, when `train` and
    PATH/test/<class>/<image>       `test` are PATH's only subfolders

So a class may be called `train` or `test`: beside other classes it is a class, never a
split.

Images are JPEG, PNG, BMP or GIF files (any depth below the class folder; other files
are ignored); grey and RGBA images are read as RGB.
"""

from pathlib import Path

import numpy as np

from dmml_tf.data.sources import EncodedImages
from dmml_tf.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def class_files(folder):
    """`{class name: sorted image paths}` for each subfolder of `folder`, empty ones too."""
    classes = {}
    for directory in sorted(p for p in Path(folder).iterdir()
                            if p.is_dir() and not p.name.startswith(".")):
        classes[directory.name] = sorted(
            str(p) for p in directory.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith("."))
    return classes


def read_image_folder(path):
    """All images of an image folder with their labels.

    Args:
        path: str or Path. The folder (see the module docstring).

    Returns:
        `(images, class_names, in_train, notes)`: an `EncodedImages` of every image file;
        the class names (sorted); a bool array marking the images of `train/` (`None`
        unless `train/` and `test/` are the only subfolders); log lines about empty class
        folders.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"Image folder not found: {root}. `data.dataset: folder:PATH` needs a "
                        "folder with one subfolder of images per class. "
                        f"Received: data.dataset=folder:{path}")
    subfolders = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    given = subfolders == {"train", "test"}
    sides = {"train": class_files(root / "train"), "test": class_files(root / "test")} \
        if given else {"all": class_files(root)}
    class_names = sorted({name for classes in sides.values() for name in classes})
    label_of = {name: label for label, name in enumerate(class_names)}
    paths, labels, in_train, notes = [], [], [], []
    for side, classes in sides.items():
        for name, files in classes.items():
            if not files:
                notes.append(f"{root / ('' if side == 'all' else side) / name}: "
                             "no images, class skipped")
            paths += files
            labels += [label_of[name]] * len(files)
            in_train += [side == "train"] * len(files)
    if not paths:
        raise DataError(f"No JPEG, PNG, BMP or GIF images found in the class subfolders of "
                        f"{root}. Received: data.dataset=folder:{path}")
    images = EncodedImages(np.array(paths), np.array(labels, dtype=np.int64))
    return images, tuple(class_names), np.array(in_train) if given else None, notes
