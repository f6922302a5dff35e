"""Iconify icons as images: a set's names resolved to standalone SVGs (aliases' flips and
turns applied), and an SVG rendered black on white with cairosvg."""

import collections
import io

import cairosvg
import numpy as np
from PIL import Image

# cairosvg draws an animation's first frame (often blank or half drawn) and applies a mask
# by its alpha, not its luminance (cut-outs come out filled): such icons would not show
# their drawing.
UNRENDERABLE = ("<animate", "<set", "<mask")


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


def icon_svg(icon_set, name):
    """The standalone SVG of one name of a set (an icon, or an alias with its flips and
    turns applied), its `currentColor` black.

    Args:
        icon_set: dict. IconifyJSON: `icons`, optional `aliases` and default box.
        name: str. An icon or alias of the set.
    """
    icon, _, transform = _resolve(icon_set, name)
    return _svg(icon_set, icon, *transform)


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


def render(svg, image_size):
    """SVG text -> RGB uint8 `(image_size, image_size, 3)` on white, viewBox kept."""
    png = cairosvg.svg2png(bytestring=svg.encode(), output_width=image_size,
                           output_height=image_size, background_color="white")
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
