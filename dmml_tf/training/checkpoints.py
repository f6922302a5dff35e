"""Checkpoints a killed run resumes from, and a guard that stops on a non-finite loss.

`ResumableCheckpoint` is Keras' `BackupAndRestore` saving every `save_every_steps` steps:
members, shadows, both optimizers' state and the step count. A run started again with
the same command restores it and continues from the start of the interrupted epoch (the
step count continues; the data order and the views' random streams start again from
their seeds); a finished run deletes it.
Put `NonFiniteLossGuard` before it in the callback list so a NaN step is never saved.
"""

import json
import math
from pathlib import Path

import keras

from dmml_tf.config import TrainConfig
from dmml_tf.errors import TrainingError


def optimizer_step(model):
    """The number of optimizer steps `model` has taken, as an int."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stop training with a `TrainingError` as soon as the loss is NaN or infinite.

    Raising (rather than setting `stop_training`) keeps callbacks later in the list from
    saving the diverged weights, and `fit` from deleting the last good checkpoint.

    Args:
        checkpoint_directory: str, Path or None. Named in the message as the place of the
            last good checkpoint. Defaults to `None`.
    """

    def __init__(self, checkpoint_directory=None):
        super().__init__()
        self.checkpoint_directory = checkpoint_directory

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            kept = (f" The last good checkpoint is kept in {self.checkpoint_directory}."
                    if self.checkpoint_directory else "")
            raise TrainingError(f"The loss became {float(loss)} at step "
                                f"{optimizer_step(self.model)}; training stopped.{kept} "
                                "Lower train.learning_rate (or the loss weights) and run again.")


class ResumableCheckpoint(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` every `save_every_steps` steps that says when it resumes.

    Args:
        directory: str or Path. Where the checkpoint lives; used by nothing else.
        save_every_steps: int. Steps between checkpoints. Defaults to `50`.
        log: callable. Prints the resume message. Defaults to `print`.
    """

    def __init__(self, directory, save_every_steps=TrainConfig.checkpoint_every_steps, log=print):
        # Two checkpoints: a run killed while writing one resumes from the other.
        super().__init__(str(directory), save_freq=save_every_steps, double_checkpoint=True)
        self.log = log

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        metadata = Path(self.backup_dir) / "training_metadata.json"
        if metadata.is_file():
            epoch = json.loads(metadata.read_text())["epoch"]
            self.log(f"      resuming from {self.backup_dir}: step "
                     f"{optimizer_step(self.model)}, epoch {epoch + 1}")


class StepTensorBoard(keras.callbacks.TensorBoard):
    """`keras.callbacks.TensorBoard` whose batch-level step is the optimizer's step count,
    so a resumed run continues its curves instead of drawing over them."""

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        # TensorBoard counts batches from 0 in every `fit`; start from the restored step.
        self._global_train_batch = optimizer_step(self.model)
