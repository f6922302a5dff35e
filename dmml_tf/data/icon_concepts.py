"""The embedded `icon_concepts` dataset: one class per icon name, one image per icon set.

An icon name that many independent icon sets draw (`home`, `calendar`, `arrow-left`, ...)
is a class; each set's drawing of it is an image, rendered black on white. Every set comes
from one npm package, `@iconify/json`, fetched once with `npm pack` at a pinned version.
Hundreds of classes of 30-100 images each: the shape of CUB-200-2011.
Credits and licences: `ICON_ATTRIBUTION.md` beside this file.

    python -m dmml_tf.data.icon_concepts --grid docs/icon_concepts.png
"""

import argparse
import collections
import io
import json
import os
import sys
import tarfile
import textwrap
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import cairosvg
import numpy as np
from PIL import Image
from tqdm import tqdm

from dmml_tf.data.array_cache import cached_arrays, check_load_arguments, write_arrays
from dmml_tf.data.npm import fetch_package
from dmml_tf.errors import DataError

PACKAGE, VERSION = "@iconify/json", "2.2.553"
# Monochrome interface icons only, so that a class's images differ by artist and not by
# colour or subject: Iconify's interface categories ("UI Multicolor" sets are
# multicolour, and "Material" holds the Material Design interface sets). Emoji, flags,
# logos, programming, maps and themed sets draw other subjects.
INTERFACE_CATEGORIES = ("UI 24px", "UI 16px / 32px", "UI Other / Mixed Grid", "Material")
# Archived ("Archive / Unmaintained") and hidden sets carry no interface category. These
# are interface sets that no current set repeats; archived sets in neither this list nor
# REPEATED_BY (bpmn, the Font Awesome brands) draw diagrams or logos.
ARCHIVED_KEPT = (
    "el", "entypo", "eva", "fluent-mdl2", "fontelico", "fontisto", "foundation",
    "grommet-icons", "icons8", "il", "iwwa", "la", "ls", "oi", "raphael", "si-glyph",
    "simple-line-icons", "subway", "topcoat", "vaadin", "vs", "websymbol", "whh", "wpf",
)
# Archived or hidden set -> the current set that repeats it (an older version or a fork of
# the same drawings would be near-copies of its images).
REPEATED_BY = {
    "ci": "coolicons", "fa": "fa7-solid", "fa-regular": "fa7-regular",
    "fa-solid": "fa7-solid", "fa6-regular": "fa7-regular", "fa6-solid": "fa7-solid",
    "feather": "lucide", "heroicons-outline": "heroicons", "heroicons-solid": "heroicons",
    "mono-icons": "mi", "pepicons": "pepicons-pop", "zmdi": "ic",
}
ARCHIVED_CATEGORY = "Archive / Unmaintained"
# SPDX ids in @iconify/json 2.2.553 that allow any use, or any use shared alike. Left
# out: non-commercial licences (CC-BY-NC-*) and the GPL, whose terms are written for
# programs and would reach the whole rendered array beside the other sets' licences.
ALLOWED_LICENCES = (
    "Apache-2.0", "BSD-3-Clause", "CC-BY-3.0", "CC-BY-4.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0",
    "CC0-1.0", "ISC", "MIT", "MPL-2.0", "OFL-1.1", "Unlicense",
)
# A class needs this many sets drawing its name (fewer could not give MIN_IMAGES images),
# and this many distinct images left after de-duplication: 251 classes of 30-96 images
# from 2.2.553 (docs/datasets.md), CUB-200-2011's shape.
MIN_SETS = 30
MIN_IMAGES = 30
# cairosvg draws an animation's first frame (often blank or half drawn) and applies a mask
# by its alpha, not its luminance (cut-outs come out filled): such icons would not show
# their drawing.
UNRENDERABLE = ("<animate", "<set", "<mask")
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


def choose_sets(collections_json):
    """The icon sets the dataset uses, and why the others are left out.

    Args:
        collections_json: dict. The package's `collections.json`: prefix -> metadata.

    Returns:
        `(chosen, excluded)`: a sorted list of prefixes, and a dict reason -> sorted list
        of prefixes.
    """
    chosen, excluded = [], collections.defaultdict(list)
    for prefix, info in sorted(collections_json.items()):
        reason = _exclusion(prefix, info)
        if reason:
            excluded[reason].append(prefix)
        else:
            chosen.append(prefix)
    return chosen, dict(excluded)


def _exclusion(prefix, info):
    """Why a set is left out (str), or None if it is used."""
    licence = info.get("license", {}).get("spdx")
    archived = info.get("hidden", False) or info.get("category") == ARCHIVED_CATEGORY
    if info.get("palette", True):
        return "multicolour (palette: true)"
    if licence not in ALLOWED_LICENCES:
        return f"licence {licence or 'missing'}"
    if archived and prefix in REPEATED_BY:
        return "archived or hidden, repeats a current set"
    if archived and prefix not in ARCHIVED_KEPT:
        return "archived or hidden, not an interface set"
    if not archived and info.get("category") not in INTERFACE_CATEGORIES:
        return f"category {info.get('category')}"
    return None


def icon_drawings(icon_set):
    """A set's drawable names, each with its standalone SVG.

    A name is a visible icon or an alias: a plain alias names its parent's drawing again;
    an alias with `hFlip`, `vFlip` or `rotate` names the transformed drawing (in some sets
    `arrow-right` is the mirrored `arrow-left`). Hidden icons (kept by Iconify for old
    names), aliases of them, and animated or masked icons (`UNRENDERABLE`) are skipped.

    Args:
        icon_set: dict. One `json/<prefix>.json` of the package (IconifyJSON).

    Returns:
        `(drawings, skipped)`: a dict name -> SVG text, and a `Counter` of skipped names
        by reason.
    """
    drawings, skipped = {}, collections.Counter()
    for name in [*icon_set["icons"], *icon_set.get("aliases", {})]:
        icon, hidden, transform = _resolve(icon_set, name)
        if hidden:
            skipped["hidden"] += 1
        elif any(tag in icon["body"] for tag in UNRENDERABLE):
            skipped["animated or masked"] += 1
        else:
            drawings[name] = _svg(icon_set, icon, *transform)
    return drawings, skipped


def _resolve(icon_set, name):
    """`(icon, hidden, (hflip, vflip, rotate))` of a name, its aliases followed.

    Transforms combine as Iconify combines them: flips toggle, quarter turns add up.
    """
    hflip = vflip = hidden = False
    rotate = 0
    while name not in icon_set["icons"]:
        alias = icon_set["aliases"][name]
        hflip ^= alias.get("hFlip", False)
        vflip ^= alias.get("vFlip", False)
        rotate += alias.get("rotate", 0)
        hidden |= alias.get("hidden", False)
        name = alias["parent"]
    icon = icon_set["icons"][name]
    return icon, hidden or icon.get("hidden", False), (hflip, vflip, rotate % 4)


def _svg(icon_set, icon, hflip, vflip, rotate):
    """The icon in its own viewBox, `currentColor` black, flipped then turned."""
    left, top = icon.get("left", icon_set.get("left", 0)), icon.get("top", icon_set.get("top", 0))
    width = icon.get("width", icon_set.get("width", 16))
    height = icon.get("height", icon_set.get("height", 16))
    body = icon["body"]
    if hflip:
        body = f'<g transform="translate({2 * left + width} 0) scale(-1 1)">{body}</g>'
    if vflip:
        body = f'<g transform="translate(0 {2 * top + height}) scale(1 -1)">{body}</g>'
    if rotate:
        x, y = left + width / 2, top + height / 2
        body = f'<g transform="rotate({90 * rotate} {x} {y})">{body}</g>'
        if rotate % 2:  # a quarter turn swaps the sides of the box about its centre
            left, top, width, height = x - height / 2, y - width / 2, height, width
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'viewBox="{left} {top} {width} {height}" color="#000">{body}</svg>'
    )


def _render(svg, image_size):
    """SVG text -> RGB uint8 `(image_size, image_size, 3)` on white, viewBox kept."""
    png = cairosvg.svg2png(bytestring=svg.encode(), output_width=image_size,
                           output_height=image_size, background_color="white")
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


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
        images[i] = _render(drawings[prefix][name], image_size)
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


def attribution(collections_json, chosen):
    """ICON_ATTRIBUTION.md: every chosen set with its author and licence.

    Args:
        collections_json: dict. The package's `collections.json`.
        chosen: list of str. The prefixes `choose_sets` picks.

    Returns:
        The Markdown text.
    """
    rows = []
    for prefix in chosen:
        info = collections_json[prefix]
        author, licence = info.get("author", {}), info["license"]
        rows.append(f"| `{prefix}` | {_cell(info['name'])} | "
                    f"{_linked(author.get('name', 'unknown'), author.get('url'))} | "
                    f"{_linked(licence['spdx'], licence.get('url'))} |")
    alike = sorted(p for p in chosen if "-SA-" in collections_json[p]["license"]["spdx"])
    intro = (
        f"The `icon_concepts` dataset is rendered from the {len(chosen)} icon sets below, "
        "those its selection rules choose (a set drawing none of the classes' names adds no "
        "image), as packaged by the Iconify project in the npm package "
        f"`{PACKAGE}@{VERSION}` (fetched with `npm pack` at this exact version). Names, "
        "authors and licences are those the package's `collections.json` declares for each "
        "set; `dmml_tf.data.icon_concepts` writes this file when it builds the dataset."
    )
    changes = (
        "Changes made: each icon is rendered from its SVG in black onto a white square "
        "background and scaled to the requested size (e.g. 64 x 64 pixels); nothing else is "
        "altered. The rendered images (the cached `icon_concepts_*px.npz` files) are "
        "adaptations: if you share them, credit the authors above, indicate these changes, "
        f"and share the images of {', '.join(f'`{p}`' for p in alike) or 'no set'} under "
        "their share-alike licence."
    )
    return "\n".join([
        "# icon_concepts: attribution", "", _wrap(intro), "",
        "| set (Iconify prefix) | icon set | author | licence |", "|---|---|---|---|", *rows,
        "", _wrap(changes), "",
    ])


def _wrap(paragraph):
    return textwrap.fill(paragraph, 88, break_on_hyphens=False, break_long_words=False)


def _linked(text, url):
    return _cell(f"{text}, {url}" if url else text)


def _cell(text):
    return str(text).replace("|", "\\|")


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
