"""The embedded data sets' cache: their arrays in one `.npz` file, written atomically and
read back only if it was built from the same sources and its arrays fit together."""

import os
import sys
import tempfile
import zipfile

import numpy as np


def write_arrays(path, arrays, sources):
    """Write `arrays` (name -> array) and `sources` (a str naming what they were built
    from) to `path`; readers see the old file or the whole new one."""
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as file:
        np.savez(file, sources=np.array(sources), **arrays)
    os.chmod(file.name, 0o644)  # NamedTemporaryFile creates it readable by its owner only
    os.replace(file.name, path)


def read_arrays(path, sources, image_size, per_image=(), per_class=()):
    """The arrays of `path`: `images`, `labels`, `class_names` and the other names given,
    as arrays (the str ones as tuples).

    Args:
        path: `Path`. A file `write_arrays` wrote.
        sources: str. What the cache must have been built from.
        image_size: int. The images' side.
        per_image: names of arrays with one entry per image.
        per_class: names of arrays with one entry per class.

    Raises:
        ValueError: built from other sources, or the arrays do not fit together; the
            caller rebuilds. OSError, KeyError, EOFError or zipfile.BadZipFile: unreadable.
    """
    with np.load(path, allow_pickle=False) as npz:
        if str(npz["sources"]) != sources:  # other pins or other rules built it
            raise ValueError(f"built from {npz['sources']}, not {sources}")
        arrays = {name: npz[name] for name in ("images", "labels", "class_names", *per_image,
                                                *per_class)}
    images, labels = arrays["images"], arrays["labels"]
    n, c = len(images), len(arrays["class_names"])
    if (images.dtype != np.uint8 or images.shape[1:] != (image_size, image_size, 3)
            or labels.shape != (n,) or not np.all((labels >= 0) & (labels < c))
            or any(len(arrays[name]) != n for name in per_image)
            or any(len(arrays[name]) != c for name in per_class)):
        raise ValueError("its arrays do not fit together")
    return {name: tuple(value.tolist()) if value.dtype.kind == "U" else value
            for name, value in arrays.items()}


def check_load_arguments(image_size, max_classes):
    """Raise the ValueError an embedded data set's loader gives for a bad argument."""
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"`image_size` must be an int >= 8. Received: image_size={image_size}")
    if max_classes is not None and (not isinstance(max_classes, int) or max_classes < 1):
        raise ValueError(
            f"`max_classes` must be None or an int >= 1. Received: max_classes={max_classes}"
        )


def cached_arrays(path, sources, image_size, per_image=(), per_class=()):
    """`read_arrays` of `path`, or None when it is missing or unusable (said on stderr):
    the caller builds the data set again."""
    if not path.exists():
        return None
    try:
        return read_arrays(path, sources, image_size, per_image, per_class)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        print(f"{path.parent.name}: cached file {path} is unreadable ({error}); rebuilding it",
              file=sys.stderr)
        return None
