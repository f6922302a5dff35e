"""Optimizers and learning-rate schedules from `TrainConfig`.

Keras 3 optimizers take one learning rate, so a cohort with its own backbone learning
rate gets two Adam optimizers: one for the members' heads, one for their backbones
(`DM2Model.compile(optimizer=..., backbone_optimizer=...)`). Both follow the same schedule.
"""

import keras


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


def build_optimizers(train_config, steps_per_epoch):
    """`(optimizer, backbone_optimizer)` for `DM2Model.compile`.

    `backbone_optimizer` is `None` unless `train.backbone_learning_rate` is set; then
    `optimizer` trains only the heads.

    Args:
        train_config: `dmml_tf.config.TrainConfig`.
        steps_per_epoch: int. Steps of one epoch, to place the schedule's milestones.
    """
    def adam(learning_rate, name):
        schedule = SCHEDULES[train_config.schedule](learning_rate, train_config, steps_per_epoch)
        return keras.optimizers.Adam(schedule, weight_decay=train_config.weight_decay or None,
                                     name=name)

    if train_config.backbone_learning_rate is None:
        optimizer = adam(train_config.learning_rate, "adam")
        if train_config.precision == "mixed_float16":  # float16 gradients underflow unscaled
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        return optimizer, None
    return (adam(train_config.learning_rate, "head_adam"),
            adam(train_config.backbone_learning_rate, "backbone_adam"))


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
