"""Checkpoints that resume exactly, the best epoch kept, and the non-finite-loss guard."""

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from unittest import mock

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from dmml_tf import run
from dmml_tf.cli import parse_args, resolve_config
from dmml_tf.errors import TrainingError
from dmml_tf.models.backbones import tiny_cnn
from dmml_tf.models.embedder import build_embedder
from dmml_tf.run import evaluate_run, load_best_weights, load_run, train
from dmml_tf.training.checkpoints import NonFiniteLossGuard, ResumableCheckpoint, resume_fits
from dmml_tf.training.cohort import restore_cohort
from dmml_tf.training.dm2 import DM2Model

ROOT = Path(__file__).resolve().parents[2]


def checkpoint_step(path):
    """The optimizer step count stored in a `.weights.h5` checkpoint."""
    with h5py.File(path) as weights:
        return int(weights["optimizer/vars/0"][()])


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5 * 16, 32, 32, 3)).astype("float32")
    images[3 * 16] = np.nan  # the fourth batch diverges
    labels = np.tile(np.repeat(np.arange(4), 4), 5).astype("int32")
    members = [build_embedder(tiny_cnn((32, 32, 3), seed=s), 8, seed=s, name=f"member{s}")
               for s in (0, 1)]
    model = DM2Model(members)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    backup = tmp_path / "backup"
    callbacks = [NonFiniteLossGuard(backup), ResumableCheckpoint(backup, save_every_steps=1)]
    with pytest.raises(TrainingError, match=f"at step 4; training stopped. The last good "
                                            f"checkpoint is kept in {backup}"):
        model.fit(images, labels, batch_size=16, epochs=1, shuffle=False, verbose=0,
                  callbacks=callbacks)
    assert not np.isfinite(model.members[0].get_weights()[0]).all()
    assert checkpoint_step(backup / "latest.weights.h5") == 3
    model.load_weights(backup / "latest.weights.h5")
    assert all(np.isfinite(w).all() for w in model.get_weights())


# A tiny run with both random streams (views, dropout), two optimizers and a cosine
# schedule: 3 epochs of 4 steps, a checkpoint every 2 steps, an evaluation every epoch.
# Recall@83 of the smoke data's 84 test images is 1 at every epoch, a tie that keeps
# epoch 1 the best (a later epoch must beat it), so `evaluate.keep: best` keeps epoch 1.
STEPS, EPOCHS, KILL_AT = 4, 3, 7  # killed after step 7: mid-epoch 2, 1 step after a checkpoint
TINY_RUN = ["--smoke", "--set", "model.backbone=tiny_cnn", "--set", "model.weights=null",
            "--set", "model.dropout=0.1", "--set", f"train.epochs={EPOCHS}",
            "--set", f"train.max_steps_per_epoch={STEPS}", "--set", "train.checkpoint_every_steps=2",
            "--set", "train.schedule=cosine", "--set", "train.learning_rate=0.001",
            "--set", "train.backbone_learning_rate=0.0005", "--set", "evaluate.recall_at=[1,83]",
            "--set", "evaluate.monitor=ensemble/recall@83", "--set", "evaluate.keep=best"]
NETWORKS = ["member0", "member1", "shadow0", "shadow1", "ensemble", "shadow_ensemble"]
# Runs `main.py` with a callback that SIGKILLs the process after optimizer step argv[1].
KILLED_RUN = """
import os, signal, sys
import keras
from dmml_tf import run
from dmml_tf.cli import main
from dmml_tf.training.checkpoints import optimizer_step

class Kill(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if optimizer_step(self.model) == int(sys.argv[1]):
            os.kill(os.getpid(), signal.SIGKILL)

callbacks = run.training_callbacks
run.training_callbacks = lambda *args: [*callbacks(*args), Kill()]
sys.exit(main(sys.argv[2:]))
"""


def tiny_run_args(directory, *overrides):
    """TINY_RUN writing into `directory`."""
    return [*TINY_RUN, "--set", f"run_directory={directory}/runs",
            "--set", f"export.directory={directory}/saved_models", *overrides]


def train_here(args):
    """`main.py` with `args`, in this process; returns what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        train(resolve_config(parse_args(args)))
    keras.backend.clear_session()
    return printed.getvalue()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The tiny run's directory, trained without interruption."""
    directory = tmp_path_factory.mktemp("uninterrupted")
    train_here(tiny_run_args(directory))
    return directory / "runs/emoji_styles"


def checkpoint_seconds(path):
    """The run's training seconds stored in a `.weights.h5` checkpoint."""
    with h5py.File(path) as weights:
        return float(weights.attrs["training_seconds"])


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """The tiny run killed (SIGKILL) after step KILL_AT; started again in this process and
    stopped by an error in its final evaluation, after training; then started a third time.

    Returns:
        Its run directory, `{start: (checkpoint step, its training seconds)}` of the
        checkpoint each of the first two starts left, and what the second and the third
        start printed (a pair). No start exports (export does not touch training).
    """
    directory = tmp_path_factory.mktemp("resumed")
    args = tiny_run_args(directory, "--set", "export.enabled=false")
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, str(KILL_AT), *args], cwd=directory,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},  # this checkout's code
                            capture_output=True, text=True, timeout=900)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run_directory = directory / "runs/emoji_styles"
    checkpoint = run_directory / "backup/latest.weights.h5"
    left = {"first": (checkpoint_step(checkpoint), checkpoint_seconds(checkpoint))}
    second = io.StringIO()
    with mock.patch.object(run, "evaluate", side_effect=RuntimeError("stopped while evaluating")), \
            pytest.raises(RuntimeError, match="stopped while evaluating"), \
            contextlib.redirect_stdout(second):
        train(resolve_config(parse_args(args)))
    keras.backend.clear_session()
    left["second"] = (checkpoint_step(checkpoint), checkpoint_seconds(checkpoint))
    return run_directory, left, (second.getvalue(), train_here(args))


def h5_arrays(path):
    """`{name: array}` of every dataset in the HDF5 file at `path`."""
    arrays = {}
    with h5py.File(path) as file:
        file.visititems(lambda name, item: arrays.update(
            {name: item[()]} if isinstance(item, h5py.Dataset) else {}))
    return arrays


def learning_rates(run_directory):
    """Both learning rates at the end of every epoch, from history.csv."""
    rows = csv.DictReader((run_directory / "history.csv").open())
    return [[float(row[key]) for key in ("learning_rate", "backbone_learning_rate")]
            for row in rows]


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_to_the_weights_of_the_uninterrupted_run(uninterrupted,
                                                                                  resumed):
    run_directory, left, (second_printed, printed) = resumed
    (first_step, first_seconds), (second_step, second_seconds) = left["first"], left["second"]
    assert first_step == 6  # the last checkpoint before the kill, in the middle of epoch 2
    assert f"resuming from {run_directory / 'backup'}: step 6, epoch 2" in second_printed
    # Stopped after training, the run kept the checkpoint training ended with: the third
    # start trained no step again, and reported the time of all of the run's training.
    assert second_step == STEPS * EPOCHS
    assert f"resuming from {run_directory / 'backup'}: step 12, training had finished" in printed
    assert not (run_directory / "backup").exists()  # a finished run deletes its checkpoint
    assert 0 < first_seconds < second_seconds
    metrics = json.loads((run_directory / "metrics.json").read_text())
    assert second_seconds <= metrics["seconds"]["training"] < second_seconds + 5
    expected, got = (h5_arrays(directory / "dm2.weights.h5")
                     for directory in (uninterrupted, run_directory))
    # Members, shadows and both optimizers' slots and step counts.
    assert got.keys() == expected.keys()
    assert {"optimizer/vars/0", "backbone_optimizer/vars/0"} <= expected.keys()
    assert expected["optimizer/vars/0"] == STEPS * EPOCHS
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    # The cosine schedule's rates at each epoch's end (one row per epoch: 0 after the last).
    np.testing.assert_allclose(learning_rates(run_directory), learning_rates(uninterrupted),
                               rtol=1e-6)
    # The resumed run knew that epoch 1, evaluated before the kill, was its best.
    metrics, expected_metrics = (json.loads((directory / "metrics.json").read_text())
                                 for directory in (run_directory, uninterrupted))
    assert metrics["kept_epoch"] == expected_metrics["kept_epoch"] == 1
    assert metrics["training_steps"] == STEPS * EPOCHS
    for network in NETWORKS:
        assert metrics[network] == pytest.approx(expected_metrics[network], abs=1e-6), network


@pytest.mark.slow
def test_keep_best_reports_and_exports_the_best_epoch_not_the_last(uninterrupted):
    metrics = json.loads((uninterrupted / "metrics.json").read_text())
    history = json.loads((uninterrupted / "evaluation_history.json").read_text())
    assert [entry["epoch"] for entry in history] == [1, 2, 3]
    assert metrics["kept_epoch"] == 1 and metrics["training_steps"] == STEPS * EPOCHS
    best, last = history[0]["results"], history[-1]["results"]
    for network in NETWORKS:
        assert metrics[network] == pytest.approx(best[network], abs=1e-6), network
    assert metrics["member0"] != pytest.approx(last["member0"], abs=1e-6)  # epochs differ

    # Every exported SavedModel embeds as the best epoch's weights, not as the last's
    # (dm2.weights.h5, saved after every epoch).
    config = load_run(uninterrupted)
    model = restore_cohort(config, uninterrupted)
    images = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    last_embeddings = {name: network.predict(images, verbose=0)
                       for name, network in model.networks().items()}
    load_best_weights(model, uninterrupted)
    for name, network in model.networks().items():
        served = tf.saved_model.load(str(uninterrupted.parents[1] / "saved_models/emoji_styles"
                                         / name / "1")).signatures["serving_default"]
        embeddings = served(images=tf.constant(images))["embeddings"].numpy()
        np.testing.assert_allclose(embeddings, network.predict(images, verbose=0), atol=1e-5,
                                   err_msg=name)
        assert not np.allclose(embeddings, last_embeddings[name], atol=1e-3), name
    keras.backend.clear_session()

    # `main.py evaluate` evaluates the kept weights again: the same metrics.
    evaluate_run(uninterrupted)
    again = json.loads((uninterrupted / "metrics.json").read_text())
    assert again.keys() == metrics.keys() and again["kept_epoch"] == 1
    for network in NETWORKS:
        assert again[network] == pytest.approx(metrics[network], abs=1e-6), network


@pytest.mark.parametrize("step, fits", [
    (0, [(0, 3, 4)]), (4, [(1, 3, 4)]), (6, [(1, 2, 2), (2, 3, 4)]), (11, [(2, 3, 1)]),
    (12, []),
], ids=["fresh", "epoch_end", "mid_epoch", "last_step_left", "finished"])
def test_resume_fits_finish_the_interrupted_epoch_then_train_whole_ones(step, fits):
    assert resume_fits(step, steps_per_epoch=4, epochs=3) == fits


def tensorboard_scalars(directory):
    """`{tag: [step, ...]}` of every scalar in the TensorBoard event files under `directory`."""
    steps = {}
    for path in sorted(Path(directory).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    return steps


def test_tensorboard_gets_every_term_both_learning_rates_and_metrics_with_continued_steps(tmp_path):
    from dmml_tf.training.callbacks import RetrievalEvaluation
    from dmml_tf.training.checkpoints import StepTensorBoard
    from dmml_tf.training.optimizers import LearningRateLogger

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (48, 32, 32, 3)).astype("float32")
    labels = np.repeat(np.arange(12), 4).astype("int32")
    members = [build_embedder(tiny_cnn((32, 32, 3), seed=s), 8, seed=s, name=f"member{s}")
               for s in (0, 1)]
    model = DM2Model(members)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), backbone_optimizer=keras.optimizers.Adam(1e-4))
    batches = tf.data.Dataset.from_tensors((images[:16], labels[:16])).repeat()

    def fit(initial_epoch, epochs):  # a new set of callbacks, as a restarted run makes
        callbacks = [RetrievalEvaluation(images, labels, every_epochs=1, backend="exact",
                                         recall_at=(1,)),
                     LearningRateLogger(), StepTensorBoard(str(tmp_path), update_freq=1)]
        model.fit(batches, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=3,
                  shuffle=False, verbose=0, callbacks=callbacks)

    fit(0, 2)
    fit(2, 3)  # continues at optimizer step 6, as after a resume
    scalars = tensorboard_scalars(tmp_path / "train")
    for term in ("loss", "member0_triplet", "member0_relational", "member1_triplet",
                 "member1_relational", "learning_rate", "backbone_learning_rate"):
        assert scalars[f"batch_{term}"] == list(range(1, 10)), term
    assert scalars["epoch_ensemble/recall@1"] == [0, 1, 2]
    assert scalars["epoch_shadow1/recall@1"] == [0, 1, 2]
    assert scalars["epoch_backbone_learning_rate"] == [0, 1, 2]
