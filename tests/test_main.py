"""Bad input on the command line: one clear error line, exit code 2, nothing written."""

import subprocess
import sys
from pathlib import Path

import pytest

from dmml_tf.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "loss.marginn=0.3"], "Unknown config key `loss.marginn`"),
        (["--set", "cohort.members=two"], "Config key `cohort.members` expects int"),
        (["--dataset", "imagenette"], "Config key `data.dataset` supports: emoji_styles"),
        (["--set", "views.policy=[{RandomSpin: {}}]"], "Unknown augmentation"),
        (["--set", "export.gallery_network=member7"], "`export.gallery_network` supports"),
    ],
    ids=["unknown_key", "wrong_type", "unknown_dataset", "unknown_augmentation",
         "unknown_gallery_network"],
)
def test_bad_input_gives_one_clear_error_and_exit_code_2(tmp_path, monkeypatch, capsys, args,
                                                         message):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error and len(error.splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # stopped before any work


@pytest.mark.slow
def test_main_py_exits_with_code_2_and_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "--set", "loss.marginn=0.3"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "Unknown config key `loss.marginn`" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()
