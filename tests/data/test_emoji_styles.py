import shutil
import subprocess

import numpy as np
import pytest

from dmml_tf.data import emoji_styles
from dmml_tf.data.emoji_styles import (
    ICON_SETS,
    MIN_STYLES,
    group_key,
    load_emoji_styles,
    normalise_sequence,
)
from dmml_tf.data.iconify_svg import icon_svg, render
from dmml_tf.errors import DataError

needs_npm = pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")


@pytest.mark.parametrize(
    "sequence, expected",
    [
        ("1f600", "1f600"),
        ("1f44b-1f3fd", "1f44b"),
        ("1f9d1-1f3fb-200d-1f91d-200d-1f9d1-1f3ff", "1f9d1-200d-1f91d-200d-1f9d1"),
        ("1f3fb", "1f3fb"),
    ],
    ids=["no_modifier", "one_modifier", "two_people_two_tones", "lone_swatch"],
)
def test_group_key(sequence, expected):
    assert group_key(sequence) == expected


def test_normalise_sequence_drops_variation_selector():
    assert normalise_sequence("263A-FE0F") == "263a"
    assert normalise_sequence("1f3f3-fe0f-200d-1f308") == "1f3f3-200d-1f308"


def fake_package(prefix, names, chars=None, aliases=None):
    icons = {name: {"body": "<path/>"} for name in names}
    return {
        "icons": {"prefix": prefix, "icons": icons, "aliases": aliases or {}},
        "chars": chars or {},
        "info": {"license": {"spdx": "MIT"}},
    }


def test_matching_across_sets_with_and_without_chars():
    chars = {
        "1f600": "grinning-face",
        "263a-fe0f": "smiling-face",
        "1f44b": "waving-hand",
        "1f449": "backhand-index-pointing-right",
        "1f1eb-1f1f7": "flag-france",
        "1f604": "grinning-face-with-smiling-eyes",
        "1f601": "beaming-face-with-smiling-eyes",  # Unicode calls it GRINNING FACE WITH...
        "e000": "private-thing",
    }
    with_chars = fake_package("a", chars.values(), chars)
    without_chars = fake_package(
        "b",
        [
            "grinning-face",  # exact name
            "whitesmilingface",  # Unicode name of U+263A
            "flag-for-france",  # old flag naming
            "old-waving-hand",  # matched through its alias
            "grinningfacewithsmilingeyes",  # ambiguous: 1f604 by CLDR, 1f601 by Unicode
            "backhand-index-pointing-left",  # in no chars.json
            "private-thing",  # private-use codepoint
        ],
        aliases={
            "waving-hand": {"parent": "old-waving-hand"},
            "backhand-index-pointing-right": {
                "parent": "backhand-index-pointing-left",
                "hFlip": True,
            },
        },
    )
    sequences, names = emoji_styles._sequences_by_style({"a": with_chars, "b": without_chars})
    assert sorted(sequences["a"]) == sorted(normalise_sequence(c) for c in chars if c != "e000")
    assert sequences["b"] == {
        "1f600": "grinning-face",
        "263a": "whitesmilingface",
        "1f1eb-1f1f7": "flag-for-france",
        "1f44b": "old-waving-hand",
        "1f449": "backhand-index-pointing-right",
    }
    assert names["263a"] == "smiling-face" and "e000" not in names


def test_render_mirrors_an_hflip_alias():
    icons = {
        "width": 16,
        "height": 16,
        "icons": {"left-half": {"body": '<rect width="8" height="16" fill="#000"/>'}},
        "aliases": {"right-half": {"parent": "left-half", "hFlip": True}},
    }
    left = render(icon_svg(icons, "left-half"), 16)
    right = render(icon_svg(icons, "right-half"), 16)
    assert left.shape == (16, 16, 3) and left.dtype == np.uint8
    assert left[:, :8].max() == 0 and left[:, 8:].min() == 255  # black on white
    np.testing.assert_array_equal(right, left[:, ::-1])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("emoji_data")
    return data_dir, load_emoji_styles(image_size=32, data_dir=data_dir, max_classes=12)


@needs_npm
def test_shapes_and_types(built):
    _, data = built
    n = len(data.images)
    assert data.images.shape == (n, 32, 32, 3) and data.images.dtype == np.uint8
    assert data.labels.shape == (n,) and data.labels.dtype == np.int64
    assert len(data.styles) == n and set(data.styles) <= set(ICON_SETS)
    assert len(data.class_names) == len(data.class_groups) == 12
    assert len(set(data.class_names)) == 12
    np.testing.assert_array_equal(np.unique(data.labels), np.arange(12))


@needs_npm
def test_every_class_has_enough_distinct_styles(built):
    _, data = built
    for label in range(len(data.class_names)):
        styles = [data.styles[i] for i in np.flatnonzero(data.labels == label)]
        assert len(styles) >= MIN_STYLES
        assert len(set(styles)) == len(styles)


@needs_npm
def test_images_are_not_blank(built):
    _, data = built
    inked = (data.images < 240).any(axis=-1).mean(axis=(1, 2))  # share of non-white pixels
    assert inked.min() > 0.02
    assert (data.images[:, 0, 0] == 255).all(axis=-1).mean() > 0.5  # the background is white


@needs_npm
def test_attribution_credits_every_set_and_is_copied(built):
    data_dir, _ = built
    text = emoji_styles.ATTRIBUTION.read_text()
    for style, (version, licence) in ICON_SETS.items():
        package = f"`@iconify-json/{style}@{version}`"
        row = next(line for line in text.splitlines() if package in line)
        assert f"| {licence} |" in row
    assert (data_dir / "emoji_styles" / "EMOJI_ATTRIBUTION.md").read_text() == text


def refuse(*args, **kwargs):
    raise AssertionError("the cache should have been used")


@pytest.mark.slow
@needs_npm
def test_second_load_reuses_the_cache(built, monkeypatch):
    data_dir, data = built
    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(emoji_styles, "render", refuse)
    again = load_emoji_styles(image_size=32, data_dir=data_dir, max_classes=12)
    np.testing.assert_array_equal(again.images, data.images)
    np.testing.assert_array_equal(again.labels, data.labels)
    assert (again.class_names, again.class_groups, again.styles) == (
        data.class_names, data.class_groups, data.styles)


@pytest.mark.slow
@needs_npm
def test_corrupt_cache_is_named_and_rebuilt(built, monkeypatch, capsys):
    data_dir, data = built
    cache = data_dir / "emoji_styles" / "emoji_styles_32px_12classes.npz"
    cache.write_bytes(b"not a zip file")
    monkeypatch.setattr(subprocess, "run", refuse)  # the npm tarballs are still cached
    rebuilt = load_emoji_styles(image_size=32, data_dir=data_dir, max_classes=12)
    assert str(cache) in capsys.readouterr().err
    np.testing.assert_array_equal(rebuilt.images, data.images)
    monkeypatch.setattr(emoji_styles, "render", refuse)  # the rebuilt cache is whole again
    reloaded = load_emoji_styles(image_size=32, data_dir=data_dir, max_classes=12)
    assert reloaded.class_names == data.class_names


def test_missing_npm_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # a folder with no npm in it
    with pytest.raises(DataError, match="npm not found") as info:
        load_emoji_styles(image_size=32, data_dir=tmp_path, max_classes=3)
    message = str(info.value)
    assert "@iconify-json/noto@1.2.9" in message
    assert "apt-get install npm" in message and "DMML_DATA_DIR" in message


@pytest.mark.slow
def test_failing_npm_pack_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/npm")
    failed = subprocess.CompletedProcess([], returncode=1, stdout="", stderr="npm error code E404")
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: failed)
    with pytest.raises(DataError, match=r"npm pack @iconify-json/noto@1\.2\.9` failed.*E404"):
        load_emoji_styles(image_size=32, data_dir=tmp_path, max_classes=3)
    assert not list((tmp_path / "emoji_styles" / "npm").iterdir())  # no partial tarball left
