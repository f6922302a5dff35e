"""The embedded `emoji_styles` dataset: one class per emoji, one image per icon set.

Eight emoji icon sets of the Iconify project, each fetched once with `npm pack` at a
pinned version, are matched by their unicode sequences and rendered onto white.
Credits and licences: `EMOJI_ATTRIBUTION.md` beside this file.
"""

import collections
import json
import os
import re
import shutil
import sys
import tarfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dmml_tf.data.array_cache import cached_arrays, check_load_arguments, write_arrays
from dmml_tf.data.iconify_svg import icon_svg, render
from dmml_tf.data.npm import fetch_package
from dmml_tf.errors import DataError

# Style (Iconify prefix) -> (pinned npm version, SPDX licence the package declares).
ICON_SETS = {
    "noto": ("1.2.9", "Apache-2.0"),
    "noto-v1": ("1.2.5", "Apache-2.0"),
    "twemoji": ("1.2.5", "CC-BY-4.0"),
    "openmoji": ("1.2.29", "CC-BY-SA-4.0"),
    "fluent-emoji-flat": ("1.2.6", "MIT"),
    "emojione": ("1.2.3", "CC-BY-4.0"),
    "emojione-v1": ("1.2.3", "CC-BY-SA-4.0"),
    "fxemoji": ("1.2.2", "Apache-2.0"),
}
MIN_STYLES = 5
ATTRIBUTION = Path(__file__).with_name("EMOJI_ATTRIBUTION.md")
# Recorded in the cache: a cache built from other versions or by an older build is rebuilt.
_SOURCES = " ".join(f"{style}@{version}" for style, (version, _) in ICON_SETS.items()) + \
    " without-ambiguous-images"


@dataclass(frozen=True)
class EmojiStyles:
    """Images of emoji drawn by several artists: a class is an emoji, a style an icon set.

    Attributes:
        images: uint8 array `(N, image_size, image_size, 3)`, RGB on white.
        labels: int64 array `(N,)`, indices into `class_names`.
        class_names: tuple of str. The emoji's name, e.g. `"waving-hand-light-skin-tone"`
            (from chars.json of the first set in `ICON_SETS` that has the emoji).
        class_groups: tuple of str, one per class. The codepoints without skin-tone
            modifiers: a base emoji and its skin-tone variants share one group.
        styles: tuple of str, one per image. The icon set it comes from (a key of
            `ICON_SETS`).
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    class_groups: tuple[str, ...]
    styles: tuple[str, ...]


def load_emoji_styles(
    image_size: int = 64, data_dir: str | Path | None = None, max_classes: int | None = None
) -> EmojiStyles:
    """Loads `emoji_styles`, building and caching it on first use.

    The first call fetches the icon sets with `npm pack` (Node.js and npm needed) and
    renders every emoji found in at least `MIN_STYLES` sets (under a minute); later
    calls only read `<data_dir>/emoji_styles/emoji_styles_<image_size>px.npz`.

    Args:
        image_size: int. Side of the square images in pixels. Defaults to `64`.
        data_dir: str or `Path`. Cache folder. Defaults to the environment variable
            `DMML_DATA_DIR`, else `~/.cache/dmml_tf`.
        max_classes: int. Keep only this many classes, spread evenly over the sorted
            classes (for quick tests; cached under its own file name). Defaults to
            `None`, all classes.

    Returns:
        An `EmojiStyles`.

    Example:

    ```python
    data = load_emoji_styles(image_size=64)
    data.images.shape  # (N, 64, 64, 3)
    data.class_names[data.labels[0]], data.styles[0]
    ```
    """
    check_load_arguments(image_size, max_classes)
    root = data_dir or os.environ.get("DMML_DATA_DIR") or "~/.cache/dmml_tf"
    folder = Path(root).expanduser() / "emoji_styles"
    subset = f"_{max_classes}classes" if max_classes else ""
    cache = folder / f"emoji_styles_{image_size}px{subset}.npz"
    arrays = cached_arrays(cache, _SOURCES, image_size, per_image=("styles",),
                           per_class=("class_groups",))
    if arrays is not None:
        return EmojiStyles(**arrays)
    folder.mkdir(parents=True, exist_ok=True)
    data = _build(folder, image_size, max_classes)
    write_arrays(cache, {name: np.asarray(value) for name, value in vars(data).items()}, _SOURCES)
    shutil.copyfile(ATTRIBUTION, folder / ATTRIBUTION.name)
    return data


def normalise_sequence(codepoints: str) -> str:
    """`"263A-FE0F"` -> `"263a"`: lower-case hex, variation selector FE0F dropped."""
    return "-".join(c for c in codepoints.lower().split("-") if c != "fe0f")


def group_key(sequence: str) -> str:
    """The sequence without skin-tone modifiers (U+1F3FB..U+1F3FF).

    `"1f44b-1f3fd"` (waving hand, medium skin tone) -> `"1f44b"` (waving hand); a lone
    modifier (a skin-tone swatch) is its own group.
    """
    kept = (c for c in sequence.split("-") if not 0x1F3FB <= int(c, 16) <= 0x1F3FF)
    return "-".join(kept) or sequence


def _build(folder, image_size, max_classes):
    packages = {
        style: _read_package(
            fetch_package(f"@iconify-json/{style}", version, folder / "npm", "emoji_styles"))
        for style, (version, _) in ICON_SETS.items()
    }
    sequences, names = _sequences_by_style(packages)
    counts = collections.Counter(seq for icons in sequences.values() for seq in icons)
    classes = sorted((seq for seq, n in counts.items() if n >= MIN_STYLES), key=_codepoints)
    if max_classes and max_classes < len(classes):
        picked = np.linspace(0, len(classes) - 1, max_classes).round().astype(int)
        classes = [classes[i] for i in picked]
    jobs = [
        (label, style, sequences[style][seq])
        for label, seq in enumerate(classes)
        for style in ICON_SETS
        if seq in sequences[style]
    ]
    progress = tqdm(jobs, desc=f"rendering emoji_styles at {image_size}px", unit="image")
    images = [render(icon_svg(packages[style]["icons"], icon), image_size)
              for _, style, icon in progress]
    data = EmojiStyles(
        images=np.stack(images),
        labels=np.array([label for label, _, _ in jobs], dtype=np.int64),
        class_names=tuple(names[seq] for seq in classes),
        class_groups=tuple(group_key(seq) for seq in classes),
        styles=tuple(style for _, style, _ in jobs),
    )
    return drop_ambiguous_images(data)


def ambiguous_images(images, labels, class_groups):
    """Boolean mask of the images pixel-identical to an image of a class in another group.

    Some styles draw one picture for several emoji (e.g. one flag for two regions): as a
    query, its right answer could not be told from a wrong one. Identical images within
    one group (skin-tone variants drawn alike) stay: a group never straddles the split.
    """
    groups_of_picture = collections.defaultdict(set)
    keys = [image.tobytes() for image in images]
    for key, label in zip(keys, labels):
        groups_of_picture[key].add(class_groups[label])
    return np.array([len(groups_of_picture[key]) > 1 for key in keys], dtype=bool)


def drop_ambiguous_images(data):
    """`data` without `ambiguous_images`; prints how many were dropped."""
    ambiguous = ambiguous_images(data.images, data.labels, data.class_groups)
    pictures = len({image.tobytes() for image in data.images[ambiguous]})
    print(f"emoji_styles: dropped {ambiguous.sum()} images identical to an image of another "
          f"emoji group ({pictures} distinct pictures)", file=sys.stderr)
    keep = ~ambiguous
    return EmojiStyles(
        images=data.images[keep],
        labels=data.labels[keep],
        class_names=data.class_names,
        class_groups=data.class_groups,
        styles=tuple(style for style, kept in zip(data.styles, keep) if kept),
    )


def _read_package(tarball):
    """icons.json, chars.json and info.json of a package, its licence checked."""
    try:
        with tarfile.open(tarball) as archive:
            package = {
                key: json.load(archive.extractfile(f"package/{key}.json"))
                for key in ("icons", "chars", "info")
            }
    except (tarfile.TarError, OSError, KeyError, ValueError) as error:
        raise DataError(f"{tarball} is unreadable ({error}); delete it to fetch it again") from None
    style, spdx = package["icons"]["prefix"], package["info"]["license"]["spdx"]
    if ICON_SETS.get(style, (None, None))[1] != spdx:  # EMOJI_ATTRIBUTION.md would be wrong
        raise DataError(f"{tarball} holds icon set {style!r} under licence {spdx!r}, not the "
                        "one EMOJI_ATTRIBUTION.md credits; delete it to fetch it again")
    return package


def _sequences_by_style(packages):
    """Per style: normalised sequence -> icon name; and sequence -> readable name.

    noto, twemoji, openmoji and fluent-emoji-flat ship chars.json (codepoints -> icon
    name); the older sets ship none, so their icons are matched by name: exactly, else
    loosely (see `_loose`). A plain alias is another name (older or newer) of its
    parent, tried when the parent's own name matches nothing; a mirrored alias is an
    emoji of its own (a hand pointing the other way). Names that would match two
    sequences are dropped; private-use codepoints are not emoji.
    """
    owned = {style: {} for style in packages}
    exact, loose = collections.defaultdict(set), collections.defaultdict(set)
    for style, package in packages.items():
        for codepoints, name in package["chars"].items():
            seq = normalise_sequence(codepoints)
            if not _is_private_use(seq):
                owned[style].setdefault(name, seq)
        for name, seq in owned[style].items():
            exact[name].add(seq)
            loose[_loose(name)].add(seq)
            if "-" not in seq and unicodedata.name(chr(int(seq, 16)), ""):
                loose[_loose(unicodedata.name(chr(int(seq, 16))))].add(seq)
    exact = {name: seqs.pop() for name, seqs in exact.items() if len(seqs) == 1}
    loose = {name: seqs.pop() for name, seqs in loose.items() if len(seqs) == 1}

    sequences, names = {}, {}
    for style, package in packages.items():
        icons, aliases = package["icons"]["icons"], package["icons"].get("aliases", {})
        other_names = collections.defaultdict(list)
        for alias, spec in sorted(aliases.items()):
            if not spec.get("hFlip"):
                other_names[spec["parent"]].append(alias)
        mirrored = [alias for alias, spec in aliases.items() if spec.get("hFlip")]
        best = {}
        for name in sorted([*icons, *mirrored]):
            matches = (exact.get(n) or loose.get(_loose(n)) for n in [name, *other_names[name]])
            seq = owned[style].get(name) or next(filter(None, matches), None)
            # Prefer what chars.json names, then visible icons, then mirrored aliases.
            hidden = icons.get(name, {}).get("hidden", False)
            rank = (name not in owned[style], hidden, name not in icons)
            if seq and (seq not in best or rank < best[seq][0]):
                best[seq] = (rank, name)
        sequences[style] = {seq: name for seq, (_, name) in best.items()}
        for name, seq in owned[style].items():
            names.setdefault(seq, name)
    return sequences, names


def _loose(name):
    """Old sets write "flag-for-france", "admissiontickets" or Unicode's "BABY SYMBOL"."""
    name = re.sub(r"^flag-for-(flag-)?", "flag-", name.lower())
    return name.replace("-", "").replace(" ", "")


def _is_private_use(sequence):
    return any(0xE000 <= c <= 0xF8FF or c >= 0xF0000 for c in _codepoints(sequence))


def _codepoints(sequence):
    return tuple(int(c, 16) for c in sequence.split("-"))
