"""Optimizers and learning-rate schedules from `TrainConfig`.

Keras 3 optimizers take one learning rate, so a cohort with its own backbone learning
rate (or backbones frozen for their first steps) gets two Adam optimizers: one for the
members' heads, one for their backbones (`DM2Model.compile(optimizer=...,
backbone_optimizer=...)`). Both follow the same schedule, each after its own warm-up.
"""

import keras
import tensorflow as tf


def _constant(learning_rate, train_config, steps_per_epoch):
    return learning_rate


def _step(learning_rate, train_config, steps_per_epoch):
    epochs = sorted(train_config.step_epochs)
    if not epochs:
        return learning_rate
    # PiecewiseConstantDecay switches after its boundary step; decay from step epoch * steps.
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        boundaries=[epoch * steps_per_epoch - 1 for epoch in epochs],
        values=[learning_rate * train_config.step_factor**i for i in range(len(epochs) + 1)],
    )


def _cosine(learning_rate, train_config, steps_per_epoch):
    return keras.optimizers.schedules.CosineDecay(learning_rate, train_config.epochs * steps_per_epoch)


# train.schedule -> (base learning rate, TrainConfig, steps per epoch) -> learning rate
SCHEDULES = {"constant": _constant, "step": _step, "cosine": _cosine}


@keras.saving.register_keras_serializable(package="dmml_tf")
class WarmUp(keras.optimizers.schedules.LearningRateSchedule):
    """`schedule`, but 0 before step `start` and rising linearly over the next
    `warmup_steps` steps: at step start + k it is schedule(step) * (k + 1) / warmup_steps.

    Args:
        schedule: float or `LearningRateSchedule`. The learning rate after the warm-up.
        warmup_steps: int. Length of the linear rise (0: none).
        start: int. Steps before which the learning rate is 0 (frozen weights).
    """

    def __init__(self, schedule, warmup_steps, start=0):
        self.schedule = schedule
        self.warmup_steps = warmup_steps
        self.start = start

    def __call__(self, step):
        step = tf.cast(step, "float32")
        value = self.schedule(step) if callable(self.schedule) else tf.constant(self.schedule, "float32")
        progress = tf.minimum((step - self.start + 1.0) / max(self.warmup_steps, 1), 1.0)
        return tf.where(step < self.start, 0.0, value * progress)

    def get_config(self):
        schedule = self.schedule
        if callable(schedule):
            schedule = keras.saving.serialize_keras_object(schedule)
        return {"schedule": schedule, "warmup_steps": self.warmup_steps, "start": self.start}

    @classmethod
    def from_config(cls, config):
        if isinstance(config["schedule"], dict):
            config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)


def build_optimizers(train_config, steps_per_epoch):
    """`(optimizer, backbone_optimizer)` for `DM2Model.compile`.

    `backbone_optimizer` is `None` unless `train.backbone_learning_rate` or
    `train.backbone_frozen_steps` is set; then `optimizer` trains only the heads.

    Args:
        train_config: `dmml_tf.config.TrainConfig`.
        steps_per_epoch: int. Steps of one epoch, to place the schedule's milestones.
    """
    if not train_config.backbones_apart():
        optimizer = adam(train_config, steps_per_epoch, train_config.learning_rate, "adam")
        if train_config.precision == "mixed_float16":  # float16 gradients underflow unscaled
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        return optimizer, None
    backbone_learning_rate = (train_config.learning_rate if train_config.backbone_learning_rate is None
                              else train_config.backbone_learning_rate)
    return (adam(train_config, steps_per_epoch, train_config.learning_rate, "head_adam"),
            adam(train_config, steps_per_epoch, backbone_learning_rate, "backbone_adam",
                 train_config.backbone_frozen_steps))


def build_proxy_optimizer(train_config, steps_per_epoch, multiplier):
    """The proxies' Adam: `train.learning_rate` times `multiplier`, on the same schedule
    and warm-up as the heads'.

    Args:
        train_config: `dmml_tf.config.TrainConfig`.
        steps_per_epoch: int. Steps of one epoch, to place the schedule's milestones.
        multiplier: float. E.g. 100 for Proxy-Anchor's proxies.
    """
    return adam(train_config, steps_per_epoch, train_config.learning_rate * multiplier,
                "proxy_adam")


def adam(train_config, steps_per_epoch, learning_rate, name, start=0):
    """An Adam optimizer at `learning_rate` on `train.schedule`, with `train.warmup_steps`
    of warm-up from step `start` (0 before it)."""
    schedule = SCHEDULES[train_config.schedule](learning_rate, train_config, steps_per_epoch)
    if train_config.warmup_steps or start:
        schedule = WarmUp(schedule, train_config.warmup_steps, start)
    return keras.optimizers.Adam(schedule, weight_decay=train_config.weight_decay or None,
                                 name=name)


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the current `learning_rate` (and `backbone_learning_rate` when the model has a
    backbone optimizer) to the logs of every step and epoch, for TensorBoard and the
    CSV log; put it before those callbacks."""

    def on_train_batch_end(self, batch, logs=None):
        self._add_learning_rates(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._add_learning_rates(logs)

    def _add_learning_rates(self, logs):
        if logs is None:
            return
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        backbone_optimizer = getattr(self.model, "backbone_optimizer", None)
        if backbone_optimizer is not None:
            logs["backbone_learning_rate"] = float(keras.ops.convert_to_numpy(backbone_optimizer.learning_rate))
