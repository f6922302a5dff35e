import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

from dmml_tf import cli
from dmml_tf.config import DataConfig, load_config
from dmml_tf.data import icon_concepts, icon_sets
from dmml_tf.data.icon_concepts import ATTRIBUTION, load_icon_concepts, save_grid
from dmml_tf.data.icon_sets import PACKAGE, VERSION, choose_sets
from dmml_tf.data.iconify_svg import icon_drawings
from dmml_tf.data.registry import load_dataset
from dmml_tf.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
SIZE = 16  # one pixel per unit of the fixture's 16 x 16 viewBoxes: edges stay crisp
TARBALL = f"icon_concepts/npm/iconify-json-{VERSION}.tgz"


def box(x, y, w, h):
    return f'<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="currentColor"/>'


def info(category, spdx, palette=False, **extra):
    licence = {"title": spdx, "spdx": spdx, "url": f"https://example.org/{spdx}"} if spdx else {}
    return {"name": f"Set {category}", "author": {"name": "An Author", "url": "https://a.example"},
            "license": licence, "category": category, "palette": palette, **extra}


# A tiny @iconify/json: 5 sets chosen of 10 (the excluded ones draw `home` too, so its
# count shows them left out), 16 x 16 icons of rectangles.
COLLECTIONS = {
    "carbon": info("UI 16px / 32px", "Apache-2.0"),
    "eva": info("Archive / Unmaintained", "MIT"),  # archived, repeated by no current set
    "lucide": info("UI 24px", "ISC"),
    "ph": info("UI Other / Mixed Grid", "CC-BY-SA-4.0"),
    "tabler": info("UI 24px", "MIT"),
    "heroicons-outline": info("Archive / Unmaintained", "MIT"),  # repeated by heroicons
    "nc-icons": info("UI 24px", "CC-BY-NC-4.0"),
    "no-licence": info("UI 24px", None),
    "simple-icons": info("Logos", "CC0-1.0"),
    "twemoji": info("Emoji", "CC-BY-4.0", palette=True),
}
ICONS = {
    "carbon": {
        "icons": {"home": box(0, 0, 4, 4), "arrow-left": box(0, 0, 3, 9),
                  "calendar": box(2, 2, 12, 12), "star": box(5, 5, 6, 2),
                  "heart": box(1, 9, 5, 5),
                  "trophy": box(3, 3, 3, 3) + '<animate attributeName="x" values="0;9"/>'},
        "aliases": {"arrow-right": {"parent": "arrow-left", "rotate": 2}},  # turned 180 degrees
    },
    "eva": {
        "icons": {"home": box(0, 0, 5, 5), "arrow-left": box(0, 5, 4, 6),
                  "arrow-right": box(12, 5, 4, 6), "heart": box(2, 9, 5, 5),
                  "star": {"body": box(0, 0, 16, 1), "hidden": True}},
    },
    "lucide": {
        "icons": {"home": box(0, 0, 6, 6), "arrow-left": box(0, 0, 5, 16),
                  "arrow-right": box(11, 0, 5, 16), "calendar-days": box(1, 1, 14, 14),
                  "star": box(5, 5, 6, 3), "heart": box(3, 9, 5, 5), "trophy": box(4, 4, 8, 8)},
        "aliases": {"calendar": {"parent": "calendar-days"}},  # another name of one drawing
    },
    "ph": {
        "icons": {"home": box(0, 0, 7, 7), "arrow-left": box(1, 1, 6, 6),
                  "arrow-right": box(9, 1, 6, 6), "calendar": box(2, 2, 12, 12),  # = carbon's
                  "star": box(5, 5, 6, 4), "heart": box(0, 0, 16, 2),  # = tabler's star
                  "trophy": box(4, 4, 8, 8)},  # = lucide's trophy
    },
    "tabler": {
        "icons": {"home": box(0, 0, 8, 8), "arrow-left": box(0, 2, 6, 12),
                  "calendar": box(3, 3, 10, 10), "star": box(0, 0, 16, 2),
                  "heart": box(4, 9, 5, 5), "trophy": box(5, 5, 2, 2)},
        "aliases": {"arrow-right": {"parent": "arrow-left", "hFlip": True},
                    "house": {"parent": "home"}},
    },
    **{prefix: {"icons": {"home": box(0, 0, 9, 9)}}
       for prefix in ("heroicons-outline", "nc-icons", "no-licence", "simple-icons")},
    "twemoji": {"icons": {"home": '<rect width="9" height="9" fill="#f4900c"/>'}},
}
CHOSEN = ["carbon", "eva", "lucide", "ph", "tabler"]
# name -> the sets whose drawing is kept, in set order.
EXPECTED = {
    "arrow-left": CHOSEN,
    "arrow-right": CHOSEN,
    "calendar": ["carbon", "lucide", "tabler"],  # ph's drawing repeats carbon's
    "heart": ["carbon", "eva", "lucide", "tabler"],  # ph's is tabler's star
    "home": CHOSEN,
    "star": ["carbon", "lucide", "ph"],  # tabler's is ph's heart; eva's is hidden
}
# Left out: `house` (one set), `trophy` (carbon's is animated, ph's repeats lucide's: 2
# distinct images of 3 drawings).


def icon_set(prefix, content):
    icons = {name: body if isinstance(body, dict) else {"body": body}
             for name, body in content["icons"].items()}
    return {"prefix": prefix, "icons": icons, "aliases": content.get("aliases", {}),
            "width": 16, "height": 16}


def write_tarball(path, files):
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            raw = json.dumps(data).encode()
            member = tarfile.TarInfo(f"package/{name}")
            member.size = len(raw)
            archive.addfile(member, io.BytesIO(raw))


def write_fixture(data_dir):
    """The fixture package where `npm pack` would put it: nothing is downloaded."""
    files = {f"json/{prefix}.json": icon_set(prefix, content) for prefix, content in ICONS.items()}
    write_tarball(data_dir / TARBALL, {**files, "collections.json": COLLECTIONS})


@pytest.fixture(autouse=True)
def small_thresholds(monkeypatch):
    monkeypatch.setattr(icon_concepts, "MIN_SETS", 3)
    monkeypatch.setattr(icon_concepts, "MIN_IMAGES", 3)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("icon_data")
    write_fixture(data_dir)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(icon_concepts, "MIN_SETS", 3)
        patch.setattr(icon_concepts, "MIN_IMAGES", 3)
        return data_dir, load_icon_concepts(image_size=SIZE, data_dir=data_dir)


def image_of(data, name, prefix):
    label = data.class_names.index(name)
    (i,) = [i for i in np.flatnonzero(data.labels == label) if data.sets[i] == prefix]
    return data.images[i]


def test_choose_sets_gives_reasons():
    chosen, excluded = choose_sets(COLLECTIONS)
    assert chosen == CHOSEN
    assert excluded == {
        "archived or hidden, repeats a current set": ["heroicons-outline"],
        "licence CC-BY-NC-4.0": ["nc-icons"],
        "licence missing": ["no-licence"],
        "category Logos": ["simple-icons"],
        "multicolour (palette: true)": ["twemoji"],
    }


def test_hidden_and_unrenderable_icons_are_skipped():
    drawings, skipped = icon_drawings(icon_set("x", {
        "icons": {"a": box(0, 0, 1, 1), "b": {"body": box(0, 0, 2, 2), "hidden": True},
                  "c": '<mask id="m"/>', "d": '<set attributeName="x" to="1"/>'},
        "aliases": {"e": {"parent": "b"}, "f": {"parent": "a", "vFlip": True}},
    }))
    assert sorted(drawings) == ["a", "f"]
    assert skipped == {"hidden": 2, "animated or masked": 2}


def test_exact_classes_and_images(built):
    _, data = built
    assert data.class_names == tuple(sorted(EXPECTED))
    kept = {name: [data.sets[i] for i in np.flatnonzero(data.labels == label)]
            for label, name in enumerate(data.class_names)}
    assert kept == EXPECTED
    n = sum(map(len, EXPECTED.values()))
    assert data.images.shape == (n, SIZE, SIZE, 3) and data.images.dtype == np.uint8
    assert data.labels.dtype == np.int64 and len(data.sets) == n


def test_images_are_black_on_white_and_unique(built):
    _, data = built
    assert set(np.unique(data.images)) == {0, 255}
    for value in (0, 255):  # every image has ink and background
        assert (data.images == value).any(axis=(1, 2, 3)).all()
    home = image_of(data, "home", "tabler")  # currentColor: black, the rest white
    np.testing.assert_array_equal(home[:8, :8], 0)
    assert (home[8:] == 255).all() and (home[:, 8:] == 255).all()
    pictures = {(image.tobytes(), label) for image, label in zip(data.images, data.labels)}
    assert len(pictures) == len(data.images)  # no picture twice within a class
    assert len({key for key, _ in pictures}) == len(data.images)  # nor in two classes


def test_alias_transforms_are_honoured(built):
    _, data = built
    left, right = image_of(data, "arrow-left", "tabler"), image_of(data, "arrow-right", "tabler")
    np.testing.assert_array_equal(right, left[:, ::-1])  # hFlip
    left, right = image_of(data, "arrow-left", "carbon"), image_of(data, "arrow-right", "carbon")
    np.testing.assert_array_equal(right, left[::-1, ::-1])  # rotate: 2 quarter turns


def test_attribution_names_each_chosen_set(built):
    data_dir, _ = built
    text = (data_dir / "icon_concepts" / ATTRIBUTION.name).read_text(encoding="utf-8")
    assert f"`{PACKAGE}@{VERSION}`" in text
    for prefix in CHOSEN:
        row = next(line for line in text.splitlines() if line.startswith(f"| `{prefix}` |"))
        spdx = COLLECTIONS[prefix]["license"]["spdx"]
        assert f"| {spdx}, https://example.org/{spdx} |" in row
        assert "An Author, https://a.example" in row
    assert not any(f"`{prefix}`" in text for prefix in COLLECTIONS if prefix not in CHOSEN)
    assert "share the images of `ph` under their share-alike licence" in " ".join(text.split())


def real_tarball():
    root = Path(os.environ.get("DMML_DATA_DIR") or "~/.cache/dmml_tf").expanduser()
    return root / TARBALL


@pytest.mark.skipif(not real_tarball().exists(), reason="the pinned @iconify/json is not fetched")
def test_committed_attribution_credits_the_real_selection():
    with tarfile.open(real_tarball()) as archive:
        collections_json = json.load(archive.extractfile("package/collections.json"))
    expected = icon_sets.attribution(collections_json, choose_sets(collections_json)[0])
    assert ATTRIBUTION.read_text(encoding="utf-8") == expected


def test_committed_attribution_lists_allowed_licences():
    lines = ATTRIBUTION.read_text(encoding="utf-8").splitlines()
    rows = [line for line in lines if line.startswith("| `")]
    assert len(rows) > 100
    licences = {row.split(" | ")[3].split(",")[0].strip(" |") for row in rows}
    assert licences <= set(icon_sets.ALLOWED_LICENCES)


def refuse(*args, **kwargs):
    raise AssertionError("the cache should have been used")


def test_second_load_reuses_the_cache(built, monkeypatch):
    data_dir, data = built
    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(icon_concepts, "render", refuse)
    again = load_icon_concepts(image_size=SIZE, data_dir=data_dir)
    np.testing.assert_array_equal(again.images, data.images)
    np.testing.assert_array_equal(again.labels, data.labels)
    assert (again.class_names, again.sets) == (data.class_names, data.sets)


def test_max_classes_spreads_over_the_sorted_classes(built):
    data_dir, data = built
    two = load_icon_concepts(image_size=SIZE, data_dir=data_dir, max_classes=2)
    assert two.class_names == ("arrow-left", "star")
    np.testing.assert_array_equal(np.unique(two.labels), [0, 1])
    np.testing.assert_array_equal(two.images[two.labels == 1], data.images[data.labels == 5])


def test_another_pin_rebuilds_the_cache(tmp_path, monkeypatch, capsys):
    write_fixture(tmp_path)
    load_icon_concepts(image_size=SIZE, data_dir=tmp_path)
    monkeypatch.setattr(icon_concepts, "_SOURCES", "@iconify/json@9.9.9 min_sets=3")
    data = load_icon_concepts(image_size=SIZE, data_dir=tmp_path)
    err = capsys.readouterr().err
    assert "rebuilding it" in err and "not @iconify/json@9.9.9" in err
    assert "5 of 10 icon sets chosen" in err and "6 classes, 25 images" in err
    assert data.class_names == tuple(sorted(EXPECTED))


def test_corrupt_tarball_is_a_data_error(tmp_path):
    tarball = tmp_path / TARBALL
    tarball.parent.mkdir(parents=True)
    tarball.write_bytes(b"not a tarball")
    with pytest.raises(DataError, match="expected the npm package @iconify/json@2.2.553") as info:
        load_icon_concepts(image_size=SIZE, data_dir=tmp_path)
    assert str(tarball) in str(info.value) and "delete it to fetch it again" in str(info.value)


def test_tarball_without_a_chosen_set_is_a_data_error(tmp_path):
    write_tarball(tmp_path / TARBALL, {"collections.json": COLLECTIONS})
    with pytest.raises(DataError, match=r"package/json/carbon\.json"):
        load_icon_concepts(image_size=SIZE, data_dir=tmp_path)


def test_no_class_left_is_a_data_error(tmp_path, monkeypatch):
    write_fixture(tmp_path)
    monkeypatch.setattr(icon_concepts, "MIN_SETS", 6)  # the fixture has 5 sets
    with pytest.raises(DataError, match="no icon name is drawn by 6 of the chosen sets"):
        load_icon_concepts(image_size=SIZE, data_dir=tmp_path)


def test_missing_npm_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # a folder with no npm in it
    with pytest.raises(DataError, match="npm not found") as info:
        load_icon_concepts(image_size=SIZE, data_dir=tmp_path)
    assert f"{PACKAGE}@{VERSION}" in str(info.value) and "icon_concepts" in str(info.value)


def test_registry_splits_whole_classes(built, monkeypatch):
    data_dir, data = built
    monkeypatch.setenv("DMML_DATA_DIR", str(data_dir))
    splits = load_dataset(DataConfig(dataset="icon_concepts", image_size=SIZE), seed=0)
    train, test = set(splits.train_labels), set(splits.test_labels)
    assert len(train) == len(test) == 3 and not train & test
    assert len(splits.train_labels) + len(splits.test_labels) == len(data.images)
    assert splits.class_names == data.class_names and splits.class_groups is None


def test_dataset_option_picks_its_config_which_never_flips():
    path = cli.config_file(cli.parse_args(["--dataset", "icon_concepts"]))
    assert path.resolve() == ROOT / "configs" / "icon_concepts.yaml"
    config = load_config(path)
    assert config.data.dataset == "icon_concepts" and not config.data.horizontal_flip
    assert not any("Flip" in name for layer in config.views.policy for name in layer)


def test_grid_picture(built, tmp_path):
    _, data = built
    path = tmp_path / "grid.png"
    save_grid(data, path, ["home", "arrow-left"], per_row=3)
    assert path.read_bytes().startswith(b"\x89PNG")
