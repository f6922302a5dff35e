"""End to end: `python main.py` in a subprocess, as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_main(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_smoke_run_trains_evaluates_and_exports(tmp_path):
    result = run_main("--smoke", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "runs/emoji_styles/metrics.json").read_text())
    expected = {"pretrained (not fine-tuned)", "member0", "member1", "shadow0", "shadow1",
                "ensemble", "shadow_ensemble"}
    assert set(metrics) == expected | {"training_steps", "seconds"}
    assert metrics["training_steps"] == 2
    assert set(metrics["seconds"]) == {"data", "training", "evaluation", "pictures", "export"}
    for values in (metrics[name] for name in expected):
        assert set(values) == {"recall@1", "recall@2", "map@r", "r_precision", "nmi",
                               "scann_recall@2"}
        assert 0.0 < values["recall@1"] <= values["recall@2"] <= 1.0
    for name in ("member0", "member1", "ensemble"):
        assert (tmp_path / f"saved_models/emoji_styles/{name}/1/saved_model.pb").is_file()
    assert (tmp_path / "runs/emoji_styles/dm2.weights.h5").is_file()
    assert "member0_relational" in result.stdout and "shadow_ensemble" in result.stdout


@pytest.mark.slow
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
def test_bad_input_gives_one_clear_error_and_exit_code_2(tmp_path, args, message):
    result = run_main(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()  # stopped before any work
