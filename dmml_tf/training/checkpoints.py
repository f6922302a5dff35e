"""Checkpoints a killed run resumes from exactly, and a guard that stops on a non-finite loss.

`ResumableCheckpoint` saves, every `save_every_steps` optimizer steps, all that training
depends on: members, shadows, every optimizer's state and step count, and the states of
the random generators (the views' and dropout's `SeedGenerator`s) that `save_weights`
leaves out. A run started again with the same command restores it and goes on at its
step: the data stream from that batch on (`dmml_tf.data.sampler.batch_indices`), and the
interrupted epoch finished by a `fit` of its remaining steps (`resume_fits`). It ends as
the run would have ended uninterrupted (tests/training/test_checkpoints.py). It also keeps
the run's training seconds so far, so a resumed run reports the time of all its training,
and it is saved when training ends: the run deletes it only once its results are written,
so a run killed while evaluating or exporting resumes without training again.
Put `NonFiniteLossGuard` before it in the callback list so a NaN step is never saved.
"""

import contextlib
import math
import os
import shutil
from pathlib import Path

import h5py
import keras

from dmml_tf.config import TrainConfig
from dmml_tf.errors import TrainingError, WeightsError

RANDOM_STATES = "random_states"  # the checkpoint's group of SeedGenerator states
TRAINING_SECONDS = "training_seconds"  # the checkpoint's attribute of the run's training time


def optimizer_step(model):
    """The number of optimizer steps `model` has taken, as an int."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


@contextlib.contextmanager
def replaced_whole(path):
    """Yields a `partial.<name>` path beside `path` to write; renamed to `path` when the
    block succeeds, so a run killed while writing leaves the previous file whole."""
    path = Path(path)
    partial = path.with_name(f"partial.{path.name}")
    yield partial
    os.replace(partial, path)


def save_weights_whole(model, path):
    """`model.save_weights(path)`, never leaving a half-written file (`replaced_whole`)."""
    with replaced_whole(path) as partial:
        model.save_weights(str(partial))


def random_states(model):
    """The variables of `model` that `save_weights` leaves out: the states of its
    `SeedGenerator`s (views, dropout), i.e. where each random stream has got to."""
    saved = {id(weight) for weight in model.weights}
    return [variable for variable in model.variables if id(variable) not in saved]


def resume_fits(step, steps_per_epoch, epochs):
    """The `fit` calls that train from optimizer step `step` to the end of epoch `epochs`
    as an uninterrupted run does, each `(initial_epoch, epochs, steps_per_epoch)`.

    Keras gives every epoch of one `fit` the same number of steps, so a step inside an
    epoch first gets a `fit` of that epoch's remaining steps. A finished run gets none.

    Example: `resume_fits(6, 4, 3)` is `[(1, 2, 2), (2, 3, 4)]`.
    """
    epoch, done = divmod(step, steps_per_epoch)
    fits = []
    if done and epoch < epochs:
        fits.append((epoch, epoch + 1, steps_per_epoch - done))
        epoch += 1
    if epoch < epochs:
        fits.append((epoch, epochs, steps_per_epoch))
    return fits


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stop training with a `TrainingError` as soon as the loss is NaN or infinite.

    Raising (rather than setting `stop_training`) keeps callbacks later in the list from
    saving the diverged weights, and the run from deleting the last good checkpoint.

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


class ResumableCheckpoint(keras.callbacks.Callback):
    """Saves `directory/latest.weights.h5` every `save_every_steps` optimizer steps: the
    model's weights, every optimizer's state and the states of its random generators.

    Steps are counted by the optimizer, so a resumed run saves at the same steps as an
    uninterrupted one. Each save replaces the file whole (`replaced_whole`).

    Args:
        directory: str or Path. Where the checkpoint lives; used by nothing else.
        save_every_steps: int. Steps between checkpoints. Defaults to `50`.
        training_seconds: callable or None. Returns the run's training seconds so far; saved
            with each checkpoint, and read back by `restore` into `seconds_before`.
            Defaults to `None` (not kept).

    Example (what `dmml_tf.run.fit_cohort` does):

    ```python
    checkpoint = ResumableCheckpoint("runs/mine/backup", save_every_steps=50)
    step = checkpoint.restore(model)  # 0 without a checkpoint
    for initial_epoch, epochs, steps in resume_fits(step, 100, 8):
        model.fit(batches_from(optimizer_step(model)), initial_epoch=initial_epoch,
                  epochs=epochs, steps_per_epoch=steps, callbacks=[checkpoint])
    checkpoint.delete()
    ```
    """

    def __init__(self, directory, save_every_steps=TrainConfig.checkpoint_every_steps,
                 training_seconds=None):
        super().__init__()
        self.directory = Path(directory)
        self.path = self.directory / "latest.weights.h5"
        self.save_every_steps = save_every_steps
        self.training_seconds = training_seconds
        self.seconds_before = 0.0  # training seconds of the run before `restore`

    def on_train_batch_end(self, batch, logs=None):
        if optimizer_step(self.model) % self.save_every_steps == 0:
            self.save()

    def on_train_end(self, logs=None):
        self.save()  # `fit` ended without an error: the weights training ended with

    def save(self):
        """Writes the checkpoint of the model as it is now."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with replaced_whole(self.path) as partial:
            self.model.save_weights(str(partial))
            with h5py.File(partial, "a") as file:
                group = file.create_group(RANDOM_STATES)
                for index, state in enumerate(random_states(self.model)):
                    group[str(index)] = keras.ops.convert_to_numpy(state)
                if self.training_seconds is not None:
                    file.attrs[TRAINING_SECONDS] = self.training_seconds()

    def restore(self, model):
        """Loads the checkpoint into `model` (built and compiled), if there is one.

        Returns:
            int. The optimizer step it was saved at; 0 without a checkpoint.
        """
        # The slots must exist to be loaded. Built with or without a checkpoint, so that
        # every worker of a cluster creates them (collective ops) at the same point; the
        # loading stays outside the strategy's scope, where Keras makes a throwaway
        # optimizer that would be one more collective on this worker only.
        if not model.optimizer.built:
            with model.distribute_strategy.scope():
                model.optimizer.build(model.trainable_variables)
        if not self.path.is_file():
            return 0
        states = random_states(model)
        try:
            model.load_weights(str(self.path))
            with h5py.File(self.path) as file:
                group = file[RANDOM_STATES]
                if len(group) != len(states):
                    raise ValueError(f"{len(group)} random generators saved, {len(states)} "
                                     "in the model")
                saved = [group[str(index)][()] for index in range(len(states))]
                self.seconds_before = float(file.attrs.get(TRAINING_SECONDS, 0.0))
        except (OSError, KeyError, ValueError) as error:
            raise WeightsError(f"The checkpoint {self.path} does not fit this run: {error}. "
                               f"Delete {self.directory} to train from the start.") from None
        for state, value in zip(states, saved):
            state.assign(value)
        return optimizer_step(model)

    def delete(self):
        """Removes the checkpoint, once the run it belongs to has written its results."""
        shutil.rmtree(self.directory, ignore_errors=True)


class StepTensorBoard(keras.callbacks.TensorBoard):
    """`keras.callbacks.TensorBoard` whose batch-level step is the optimizer's step count,
    so a resumed run continues its curves instead of drawing over them."""

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        # TensorBoard counts batches from 0 in every `fit`; start from the restored step.
        self._global_train_batch = optimizer_step(self.model)
