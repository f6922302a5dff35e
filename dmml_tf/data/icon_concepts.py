"""The embedded `icon_concepts` dataset: one class per icon name, one image per icon set.

An icon name that many independent icon sets draw (`home`, `calendar`, `arrow-left`, ...)
is a class; each set's drawing of it is an image, rendered black on white. Every set comes
from one npm package, `@iconify/json`, fetched once with `npm pack` at a pinned version.
Hundreds of classes of 30-100 images each: the shape of CUB-200-2011.
Credits and licences: `ICON_ATTRIBUTION.md` beside this file.

This module builds, caches and loads the dataset; `icon_sets` chooses the sets and writes
their attribution, `iconify_svg` turns each icon into an SVG and an image.

    python -m dmml_tf.data.icon_concepts --grid docs/icon_concepts.png
"""

import argparse
import collections
import json
import os
import sys
import tarfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dmml_tf.data.array_cache import cached_arrays, check_load_arguments, write_arrays
from dmml_tf.data.icon_sets import PACKAGE, VERSION, attribution, choose_sets
from dmml_tf.data.iconify_svg import icon_drawings, render
from dmml_tf.data.npm import fetch_package
from dmml_tf.errors import DataError

# A class needs this many sets drawing its name (fewer could not give MIN_IMAGES images),
# and this many distinct images left after de-duplication: 251 classes of 30-96 images
# from 2.2.553 (docs/datasets.md), CUB-200-2011's shape.
MIN_SETS = 30
MIN_IMAGES = 30
ATTRIBUTION = Path(__file__).with_name("ICON_ATTRIBUTION.md")
# Recorded in the cache: a cache built from another pin or other thresholds is rebuilt.
_SOURCES = f"{PACKAGE}@{VERSION} min_sets={MIN_SETS} min_images={MIN_IMAGES}"


@dataclass(frozen=True)
class IconConcepts:
    """Drawings of interface concepts by many icon sets: a class is an icon name.

    Attributes:
        images: uint8 array `(N, image_size, image_size, 3)`, RGB, black on white.
        labels: int64 array `(N,)`, indices into `class_names`.
        class_names: tuple of str, sorted. Icon names, e.g. `"arrow-left"`.
        sets: tuple of str, one per image. The Iconify prefix of the set that drew it.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    sets: tuple[str, ...]


def load_icon_concepts(
    image_size: int = 64, data_dir: str | Path | None = None, max_classes: int | None = None
) -> IconConcepts:
    """Loads `icon_concepts`, building and caching it on first use.

    The first call fetches `@iconify/json` with `npm pack` (Node.js and npm needed) and
    renders every drawing of a name at least `MIN_SETS` sets draw (about a minute); later calls
    only read `<data_dir>/icon_concepts/icon_concepts_<image_size>px.npz`. The build
    writes `ICON_ATTRIBUTION.md` beside the cache.

    Args:
        image_size: int. Side of the square images in pixels. Defaults to `64`.
        data_dir: str or `Path`. Cache folder. Defaults to the environment variable
            `DMML_DATA_DIR`, else `~/.cache/dmml_tf`.
        max_classes: int. Keep only this many classes, spread evenly over the sorted
            classes (for quick runs). Defaults to `None`, all classes.

    Returns:
        An `IconConcepts`.

    Example:

    ```python
    data = load_icon_concepts(image_size=64)
    data.class_names[data.labels[0]], data.sets[0]  # ('airplay', 'andrsrxn')
    ```
    """
    check_load_arguments(image_size, max_classes)
    root = data_dir or os.environ.get("DMML_DATA_DIR") or "~/.cache/dmml_tf"
    folder = Path(root).expanduser() / "icon_concepts"
    cache = folder / f"icon_concepts_{image_size}px.npz"
    arrays = cached_arrays(cache, _SOURCES, image_size, per_image=("sets",))
    data = None if arrays is None else IconConcepts(**arrays)
    if data is None:
        folder.mkdir(parents=True, exist_ok=True)
        data, credits = _build(folder, image_size)
        (folder / ATTRIBUTION.name).write_text(credits, encoding="utf-8")
        write_arrays(cache, {name: np.asarray(value) for name, value in vars(data).items()},
                     _SOURCES)
    return _keep_classes(data, max_classes) if max_classes else data


def _read_package(tarball):
    """collections.json, and per chosen set its `icon_drawings`."""
    try:
        with tarfile.open(tarball) as archive:
            collections_json = json.load(archive.extractfile("package/collections.json"))
            members = [archive.getmember(f"package/json/{prefix}.json")
                       for prefix in choose_sets(collections_json)[0]]
            # In archive order: the gzip stream is then read once, forwards.
            drawings = {
                Path(member.name).stem: icon_drawings(json.load(archive.extractfile(member)))
                for member in sorted(members, key=lambda member: member.offset)
            }
    except (tarfile.TarError, OSError, EOFError, zlib.error, KeyError, ValueError) as error:
        raise DataError(
            f"{tarball} is unreadable ({error!r}): expected the npm package "
            f"{PACKAGE}@{VERSION} with package/collections.json and package/json/<prefix>.json "
            "for every icon set; delete it to fetch it again"
        ) from None
    return collections_json, drawings


def _build(folder, image_size):
    """`(IconConcepts, attribution text)`, every count printed."""
    started = time.perf_counter()
    collections_json, read = _read_package(fetch_package(PACKAGE, VERSION, folder / "npm",
                                                         "icon_concepts"))
    chosen, excluded = choose_sets(collections_json)
    _log(f"{len(chosen)} of {len(collections_json)} icon sets chosen; left out:")
    for reason, prefixes in sorted(excluded.items()):
        _log(f"  {len(prefixes):3d} {reason}: {', '.join(prefixes)}")
    drawings = {prefix: names for prefix, (names, _) in read.items()}
    skipped = sum((counts for _, counts in read.values()), collections.Counter())
    _log(f"names skipped in the chosen sets: {dict(skipped)}")
    sets_per_name = collections.Counter(name for names in drawings.values() for name in names)
    candidates = sorted(name for name, n in sets_per_name.items() if n >= MIN_SETS)
    _log(f"{len(candidates)} candidate names, drawn by >= {MIN_SETS} of the "
         f"{len(chosen)} sets ({len(sets_per_name)} names in all)")
    jobs = [(name, prefix) for name in candidates for prefix in chosen
            if name in drawings[prefix]]
    images = np.empty((len(jobs), image_size, image_size, 3), dtype=np.uint8)
    progress = tqdm(jobs, desc=f"rendering icon_concepts at {image_size}px", unit="image")
    for i, (name, prefix) in enumerate(progress):
        images[i] = render(drawings[prefix][name], image_size)
    _log(f"{len(images)} images rendered")
    data = _distinct_images(images, [name for name, _ in jobs], [prefix for _, prefix in jobs])
    if not data.class_names:
        raise DataError(f"{PACKAGE}@{VERSION}: no icon name is drawn by {MIN_SETS} of the "
                        f"chosen sets in {MIN_IMAGES} distinct images")
    sizes = np.bincount(data.labels)
    _log(f"{len(data.class_names)} classes, {len(data.images)} images; images per class: min "
         f"{sizes.min()}, median {np.median(sizes):g}, max {sizes.max()}; built in "
         f"{time.perf_counter() - started:.0f} s")
    return data, attribution(collections_json, chosen)


def _distinct_images(images, names, prefixes):
    """The `IconConcepts` of the images `deduplicate` keeps, in classes with at least
    `MIN_IMAGES` of them."""
    names, prefixes = np.array(names), np.array(prefixes)
    keep = deduplicate(names, images)
    per_class = collections.Counter(names[keep])
    classes = sorted(name for name, n in per_class.items() if n >= MIN_IMAGES)
    in_classes = np.isin(names, classes)
    _log(f"{len(set(names)) - len(classes)} classes with fewer than {MIN_IMAGES} images dropped "
         f"({(keep & ~in_classes).sum()} images)")
    keep &= in_classes
    return IconConcepts(
        images=images[keep],
        labels=np.searchsorted(classes, names[keep]).astype(np.int64),
        class_names=tuple(classes),
        sets=tuple(prefixes[keep].tolist()),
    )


def deduplicate(class_names, images):
    """Boolean mask of the images kept: each picture once per class, none shared by two.

    A picture repeated within a class (two sets shipping one drawing, a set and its fork)
    adds nothing; a picture drawn for two classes (a set naming one drawing `home` and,
    through an alias, `house`) could not tell its class as a query, so all its copies go.

    Args:
        class_names: sequence of str, the class of each image.
        images: uint8 array `(N, H, W, 3)`.

    Returns:
        Boolean array `(N,)`; the counts dropped are printed.
    """
    keys = [image.tobytes() for image in images]
    classes_of = collections.defaultdict(set)
    for key, name in zip(keys, class_names):
        classes_of[key].add(name)
    shared = np.array([len(classes_of[key]) > 1 for key in keys], dtype=bool)
    seen, first = set(), np.zeros(len(keys), dtype=bool)
    for i, pair in enumerate(zip(keys, class_names)):
        first[i] = pair not in seen
        seen.add(pair)
    pictures = sum(len(classes) > 1 for classes in classes_of.values())
    _log(f"{(~first & ~shared).sum()} duplicates within a class dropped; {shared.sum()} images "
         f"identical to an image of another class dropped ({pictures} distinct pictures)")
    return first & ~shared


def _keep_classes(data, count):
    """`count` classes spread evenly over the sorted classes, relabelled 0..count-1."""
    if count >= len(data.class_names):
        return data
    picked = np.linspace(0, len(data.class_names) - 1, count).round().astype(int)
    keep = np.isin(data.labels, picked)
    return IconConcepts(
        images=data.images[keep],
        labels=np.searchsorted(picked, data.labels[keep]).astype(np.int64),
        class_names=tuple(data.class_names[i] for i in picked),
        sets=tuple(s for s, kept in zip(data.sets, keep) if kept),
    )


def save_grid(data, path, class_names=None, per_row=8):
    """A PNG of example classes: one row per class, its name as the row label.

    Args:
        data: `IconConcepts`.
        path: str or `Path` of the PNG.
        class_names: sequence of str. The rows. Defaults to 8 classes spread evenly.
        per_row: int. Images per row, spread evenly over the class's sets. Defaults to `8`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if class_names is None:
        picked = np.linspace(0, len(data.class_names) - 1, 8).round().astype(int)
        class_names = [data.class_names[i] for i in picked]
    figure, axes = plt.subplots(len(class_names), per_row, squeeze=False,
                                figsize=(per_row * 0.9 + 1.2, len(class_names) * 0.9))
    for row, name in zip(axes, class_names):
        members = np.flatnonzero(data.labels == data.class_names.index(name))
        for axis, i in zip(row, members[np.linspace(0, len(members) - 1, per_row).round()
                                        .astype(int)]):
            axis.imshow(data.images[i])
            axis.set_title(data.sets[i], fontsize=6)
        for axis in row:
            axis.set_xticks([])
            axis.set_yticks([])
        row[0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _log(message):
    print(f"icon_concepts: {message}", file=sys.stderr)


def main(argv=None):
    """`--grid PATH`: build or load the dataset and save `save_grid`'s picture."""
    parser = argparse.ArgumentParser(prog="python -m dmml_tf.data.icon_concepts",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--classes", help="comma-separated class names (default: 8 spread evenly)")
    args = parser.parse_args(argv)
    data = load_icon_concepts(args.image_size)
    save_grid(data, args.grid, args.classes.split(",") if args.classes else None)
    print(args.grid)


if __name__ == "__main__":
    main()
