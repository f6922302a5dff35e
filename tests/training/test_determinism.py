"""Determinism: the same seed and config give the same losses and metrics on CPU, in a
fresh process and in one that has trained before (benchmarks/reproduce.py runs every arm
in one process)."""

import json
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from dmml_tf.cli import parse_args, resolve_config
from dmml_tf.run import train

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--smoke", "--set", "model.backbone=tiny_cnn", "--set", "model.weights=null", "--set",
        "train.epochs=2", "--set", "train.max_steps_per_epoch=4", "--set",
        "loss.mining=distance_weighted"]


def results(directory):
    run_directory = directory / "runs/emoji_styles"
    metrics = json.loads((run_directory / "metrics.json").read_text())
    metrics.pop("seconds")  # wall time, the one thing that differs
    return (run_directory / "history.csv").read_text(), metrics


def in_new_process(directory, *overrides):
    directory.mkdir()
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), *ARGS, *overrides],
                            cwd=directory, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return results(directory)


def in_this_process(directory, monkeypatch, *overrides):
    directory.mkdir()
    monkeypatch.chdir(directory)
    train(resolve_config(parse_args([*ARGS, *overrides])))
    keras.backend.clear_session()
    return results(directory)


@pytest.mark.slow
def test_same_seed_and_config_give_the_same_losses_and_metrics(tmp_path, monkeypatch):
    history, metrics = in_new_process(tmp_path / "first")
    assert "member1_triplet" in history.splitlines()[0] and len(history.splitlines()) == 3
    # ...and the comparison can fail: another seed trains differently.
    other_history, other_metrics = in_this_process(tmp_path / "other_seed", monkeypatch,
                                                   "--set", "seed=1")
    assert other_history != history and other_metrics != metrics
    # The same run again, in a process that has just trained another.
    assert in_this_process(tmp_path / "second", monkeypatch) == (history, metrics)
