"""Checkpoints that resume and the non-finite-loss guard."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from dmml_tf.errors import TrainingError
from dmml_tf.models.backbones import tiny_cnn
from dmml_tf.models.embedder import build_embedder
from dmml_tf.training.checkpoints import NonFiniteLossGuard, ResumableCheckpoint
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


@pytest.mark.slow
def test_sigkill_mid_epoch_then_the_same_command_resumes_and_finishes(tmp_path):
    steps, epochs = 5, 30  # the smoke data has 6 steps per epoch
    command = [sys.executable, str(ROOT / "main.py"), "--smoke", "--set", "model.backbone=tiny_cnn",
               "--set", "model.weights=null", "--set", f"train.epochs={epochs}",
               "--set", f"train.max_steps_per_epoch={steps}", "--set", "train.checkpoint_every_steps=2",
               "--set", "evaluate.every_epochs=0"]
    run_directory = tmp_path / "runs/emoji_styles"
    metadata = run_directory / "backup/training_metadata.json"
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 600
        while first.poll() is None and time.time() < deadline:
            try:  # a checkpoint in the second epoch or later: kill the run
                if json.loads(metadata.read_text())["epoch"] >= 1:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert first.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-3000:]
    epoch = json.loads(metadata.read_text())["epoch"]
    saved_step = checkpoint_step(run_directory / "backup/latest.weights.h5")
    assert 1 <= epoch < epochs - 1 and epoch * steps < saved_step <= (epoch + 1) * steps

    second = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    backup = Path("runs/emoji_styles/backup")
    assert f"resuming from {backup}: step {saved_step}, epoch {epoch + 1}" in second.stdout
    # The interrupted epoch ran again from its start; the step count went on from the checkpoint.
    final_step = checkpoint_step(run_directory / "dm2.weights.h5")
    assert final_step == saved_step + (epochs - epoch) * steps
    assert not (run_directory / "backup").exists()  # a finished run deletes its backup
    logged = [line.split(",")[0] for line in (run_directory / "history.csv").read_text().splitlines()]
    assert logged == ["epoch", *map(str, range(epochs))]


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
