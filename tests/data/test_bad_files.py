import csv
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dmml_tf.config import DataConfig
from dmml_tf.data.bad_files import find_bad_files
from dmml_tf.data.image_folder import read_image_folder
from dmml_tf.data.registry import load_dataset

ROOT = Path(__file__).resolve().parents[2]
BAD = {
    "crane/empty.jpg": "empty file",
    "finch/truncated.jpg": "truncated or corrupt",
    "heron/notes.jpg": "not a JPEG, PNG, BMP or GIF image",
}


def jpeg(seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


def build_messy_folder(root):
    """8 classes of 4 good images, the three bad files of `BAD`, an empty class folder and
    a class with one image."""
    for c, name in enumerate(["crane", "finch", "heron", "ibis", "jay", "kite", "lark", "owl"]):
        (root / name).mkdir(parents=True)
        for i in range(4):
            (root / name / f"{i}.jpg").write_bytes(jpeg(10 * c + i))
    (root / "crane/empty.jpg").write_bytes(b"")
    (root / "finch/truncated.jpg").write_bytes(jpeg(99)[:400])
    (root / "heron/notes.jpg").write_text("field notes: two herons at dawn\n")
    (root / "empty_class").mkdir()
    (root / "wren").mkdir()
    (root / "wren/only.jpg").write_bytes(jpeg(100))
    return root


def test_bad_files_are_found_with_their_reason(tmp_path):
    images, _, _, _ = read_image_folder(build_messy_folder(tmp_path))
    lines = []
    ok, skipped = find_bad_files(images, lines.append)
    bad_paths = {str(tmp_path / name) for name in BAD}
    np.testing.assert_array_equal(ok, [path not in bad_paths for path in images.keys])
    assert sorted(skipped) == sorted(f"{tmp_path / name}: {reason}" for name, reason in BAD.items())
    assert lines[0].startswith(f"      checked {len(images.keys)} images in ")
    assert lines[0].endswith("3 cannot be decoded and are skipped:")
    assert len(lines) == 4


def test_the_splits_keep_the_good_images_and_the_list_of_skipped_ones(tmp_path):
    build_messy_folder(tmp_path)
    splits = load_dataset(DataConfig(dataset=f"folder:{tmp_path}"), seed=0, log=lambda line: None)
    kept = {*splits.train.keys, *splits.test.keys}
    assert len(kept) == 8 * 4 + 1 and not kept & {str(tmp_path / name) for name in BAD}
    assert sorted(splits.skipped) == sorted(
        [f"{tmp_path / 'empty_class'}: no images, class skipped"]
        + [f"{tmp_path / name}: {reason}" for name, reason in BAD.items()])


def smoke_run(data, cwd):
    """`main.py --smoke` with a tiny backbone on the image folder `data`."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--dataset", f"folder:{data}", "--smoke",
         "--set", "model.backbone=tiny_cnn", "--set", "model.weights=null",
         "--set", "train.max_steps_per_epoch=0", "--set", "export.enabled=false"],
        cwd=cwd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_a_run_on_a_messy_folder_trains_to_the_end(tmp_path):
    data = build_messy_folder(tmp_path / "messy" / "birds")
    result = smoke_run(data, tmp_path / "messy")
    out = result.stdout
    assert "3 cannot be decoded and are skipped:" in out
    for name, reason in BAD.items():
        assert out.count(str(data / name)) == 1  # listed once
        assert f"{data / name}: {reason}" in out
    assert out.count(f"{data / 'empty_class'}: no images, class skipped") == 1
    summary = re.search(r"(\d+) training images of (\d+) classes, (\d+) test images of (\d+)", out)
    train_images, train_classes, test_images, test_classes = map(int, summary.groups())
    assert train_images + test_images == 8 * 4 + 1 and train_classes + test_classes == 9
    run = next((tmp_path / "messy" / "runs").rglob("history.csv")).parent
    epochs = list(csv.DictReader((run / "history.csv").open()))
    assert len(epochs) == 1
    # The same run on the folder without the bad files gives the same metrics.
    clean = tmp_path / "clean" / "birds"
    shutil.copytree(data, clean)
    for name in BAD:
        (clean / name).unlink()
    (clean / "empty_class").rmdir()
    smoke_run(clean, tmp_path / "clean")
    clean_run = next((tmp_path / "clean" / "runs").rglob("metrics.json")).parent
    metrics, clean_metrics = (json.loads((r / "metrics.json").read_text()) for r in (run, clean_run))
    for name in ("member0", "member1", "ensemble", "shadow_ensemble"):
        assert metrics[name] == clean_metrics[name]
