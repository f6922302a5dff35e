"""End to end, as a user runs it: `python main.py --smoke` in a subprocess (the one real
run of the suite: the default pretrained MobileNetV2 members on emoji_styles), then
`evaluate | export | search` on the finished run."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
NETWORKS = ["member0", "member1", "shadow0", "shadow1", "ensemble", "shadow_ensemble"]
BEFORE_TRAINING = ["member0 before training", "member1 before training", "ensemble before training"]


def run_main(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("commands")
    trained = run_main("--smoke", cwd=cwd)
    assert trained.returncode == 0, trained.stderr[-3000:]
    (cwd / "stdout.txt").write_text(trained.stdout)
    return cwd


@pytest.mark.slow
def test_training_writes_metrics_history_pictures_exports_and_index(finished_run):
    run_directory = finished_run / "runs/emoji_styles"
    metrics = json.loads((run_directory / "metrics.json").read_text())
    assert list(metrics) == [*BEFORE_TRAINING, *NETWORKS, "kept_epoch", "training_steps",
                             "seconds"]
    assert metrics["kept_epoch"] == 1 and metrics["training_steps"] == 2
    assert list(metrics["seconds"]) == ["data", "build", "evaluation", "training", "pictures",
                                        "export"]
    for values in (metrics[name] for name in [*BEFORE_TRAINING, *NETWORKS]):
        assert list(values) == ["recall@1", "recall@2", "map@r", "r_precision", "mrr", "knn_accuracy", "nmi",
                                "scann_recall@2"]
        assert 0.0 < values["recall@1"] <= values["recall@2"] <= 1.0
        assert values["scann_recall@2"] == 1.0  # 84 test images: scored exactly
    stdout = (finished_run / "stdout.txt").read_text()
    assert "member0_relational" in stdout and "shadow_ensemble" in stdout
    assert "wall time: data" in stdout
    assert (run_directory / "dm2.weights.h5").is_file()
    history = json.loads((run_directory / "evaluation_history.json").read_text())
    assert [entry["epoch"] for entry in history] == [1]
    # The evaluation after the last epoch is the final one, without the baseline.
    for network in NETWORKS:
        assert history[0]["results"][network] == pytest.approx(metrics[network], abs=1e-6)
    for picture in ("retrieval_grid.png", "recall_per_epoch.png"):
        assert Image.open(run_directory / picture).format == "PNG"
    for network in NETWORKS:
        assert (finished_run / f"saved_models/emoji_styles/{network}/1/saved_model.pb").is_file()
    assert (finished_run / "saved_models/emoji_styles/gallery/1").is_dir()


@pytest.mark.slow
def test_evaluate_reproduces_the_metrics_from_the_saved_weights(finished_run):
    metrics_path = finished_run / "runs/emoji_styles/metrics.json"
    trained = json.loads(metrics_path.read_text())
    evaluated = run_main("evaluate", cwd=finished_run)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "shadow_ensemble" in evaluated.stdout
    again = json.loads(metrics_path.read_text())
    assert again.keys() == trained.keys()  # the training run's steps and seconds are kept
    for network in [*BEFORE_TRAINING, *NETWORKS]:
        assert again[network] == pytest.approx(trained[network], abs=1e-6), network


@pytest.mark.slow
def test_export_then_search_finds_a_gallery_image(finished_run, tmp_path):
    exported = run_main("export", cwd=finished_run)
    assert exported.returncode == 0, exported.stderr[-3000:]
    for network in [*NETWORKS, "gallery"]:
        assert (finished_run / f"saved_models/emoji_styles/{network}/2").is_dir()
    # A query file made from gallery image 5's thumbnail: its nearest image is image 5.
    thumbnails = np.load(finished_run / "saved_models/emoji_styles/gallery/2/thumbnails.npy")
    Image.fromarray(thumbnails[5]).save(tmp_path / "query.png")
    searched = run_main("search", tmp_path / "query.png", cwd=finished_run)
    assert searched.returncode == 0, searched.stderr[-3000:]
    first = next(line for line in searched.stdout.splitlines() if line.startswith("   1."))
    assert first.endswith("emoji_styles:test/5")
    assert (finished_run / "runs/emoji_styles/search.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["search"], "needs query image files"),
    (["evaluate", "--run", "nowhere"], "No finished run in nowhere"),
], ids=["no_image", "no_run"])
def test_command_errors_are_one_line_and_exit_code_2(finished_run, args, message):
    result = run_main(*args, cwd=finished_run)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_second_run_on_a_directory_in_use_stops_at_once(finished_run):
    from tests.test_files import hold_lock

    holder = hold_lock(finished_run / "runs/emoji_styles")
    try:
        second = run_main("--smoke", cwd=finished_run)
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode == 2
    assert f"runs/emoji_styles is in use by process {holder.pid}" in second.stderr
    assert "Traceback" not in second.stderr
