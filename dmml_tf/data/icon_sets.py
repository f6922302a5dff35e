"""Which icon sets of `@iconify/json` the `icon_concepts` dataset draws from, and the
attribution (ICON_ATTRIBUTION.md) crediting each chosen set's author and licence."""

import collections
import textwrap

# The package the dataset is built from, at the version the selection rules below are
# written against (its `collections.json`).
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
