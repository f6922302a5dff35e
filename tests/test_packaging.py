"""The `dmml-tf` console script: pyproject.toml's dependencies are met by the installed
ones, and the installed command works outside a checkout."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh virtual environment that sees the installed packages, with dmml_tf
    installed into it (not editable) from a copy of the sources."""
    base = tmp_path_factory.mktemp("packaging")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "dmml_tf", source / "dmml_tf",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(base / "venv")],
                   check=True)
    # --no-index: every declared dependency must already be installed, in a version the
    # declared range admits, or the install fails.
    result = subprocess.run([str(base / "venv/bin/python"), "-m", "pip", "install", "-q",
                             "--no-index", "--no-build-isolation", str(source)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return base / "venv"


@pytest.mark.slow
def test_console_script_help_and_package_location(venv, tmp_path):
    result = subprocess.run([str(venv / "bin/dmml-tf"), "--help"], capture_output=True,
                            text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "{train,evaluate,export,search}" in result.stdout
    where = subprocess.run([str(venv / "bin/python"), "-c", "import dmml_tf; print(dmml_tf.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path).stdout
    assert str(venv) in where  # the installed copy, not the checkout


@pytest.mark.slow
def test_console_script_trains_outside_a_checkout(venv, tmp_path):
    # No configs/ here: the package defaults (configs/emoji_styles.yaml's values) apply.
    command = [str(venv / "bin/dmml-tf"), "--smoke", "--set", "model.backbone=tiny_cnn",
               "--set", "model.weights=null", "--set", "export.enabled=false"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path,
                            timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "runs/emoji_styles/metrics.json").read_text())
    assert metrics["training_steps"] == 2
    assert 0.0 < metrics["ensemble"]["recall@1"] <= 1.0
