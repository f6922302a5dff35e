"""The `dmml-tf` console script: pyproject.toml's dependencies are met by the installed
ones, and the installed command works outside a checkout."""

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh virtual environment that sees this environment's packages, with dmml_tf
    installed into it (not editable) from a wheel built from a copy of the sources."""
    base = tmp_path_factory.mktemp("packaging")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "dmml_tf", source / "dmml_tf",
                    ignore=shutil.ignore_patterns("__pycache__"))
    # The wheel is built here, with the build tools requirements.txt installs.
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index",
                            "--no-build-isolation", "-w", str(base / "wheels"), str(source)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True)
    # The new environment sees this one's packages (those of a virtual environment too,
    # which --system-site-packages would not: it sees the base interpreter's).
    inner = subprocess.run([str(base / "venv/bin/python"), "-c", "import site; print(site.getsitepackages()[0])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    (Path(inner) / "outer.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    # --no-index: every declared dependency must already be installed, in a version the
    # declared range admits, or the install fails.
    wheel, = (base / "wheels").glob("dmml_tf-*.whl")
    result = subprocess.run([str(base / "venv/bin/python"), "-m", "pip", "install", "-q",
                             "--no-index", str(wheel)], capture_output=True, text=True)
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
