import math
import re

import keras
import numpy as np
import pytest

from dmml_tf.config import TrainConfig, load_config
from dmml_tf.errors import ConfigError
from dmml_tf.training.optimizers import SCHEDULES, LearningRateLogger, WarmUp, build_optimizers

STEPS = 10  # steps per epoch


def learning_rate_at(optimizer, step):
    optimizer.iterations.assign(step)
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def reference_learning_rate(config, step):
    """The schedules written out: step decays at epoch boundaries, cosine to 0."""
    if config.schedule == "step":
        return config.learning_rate * config.step_factor ** sum(step >= e * STEPS for e in config.step_epochs)
    if config.schedule == "cosine":
        return config.learning_rate * 0.5 * (1 + math.cos(math.pi * min(step / (config.epochs * STEPS), 1)))
    return config.learning_rate


@pytest.mark.parametrize("schedule, step_epochs", [("constant", ()), ("step", (2, 4)), ("cosine", ())])
def test_schedules_match_their_formulas(schedule, step_epochs):
    config = TrainConfig(epochs=5, learning_rate=0.1, schedule=schedule, step_epochs=step_epochs,
                         step_factor=0.5)
    optimizer, backbone_optimizer = build_optimizers(config, STEPS)
    assert backbone_optimizer is None
    for step in (0, 5, 19, 20, 21, 39, 40, 49):
        np.testing.assert_allclose(learning_rate_at(optimizer, step),
                                   reference_learning_rate(config, step), rtol=1e-5, atol=1e-9)


def test_backbone_learning_rate_gives_a_second_optimizer_with_the_same_schedule():
    config = TrainConfig(epochs=2, learning_rate=1e-3, backbone_learning_rate=1e-4,
                         weight_decay=1e-4, schedule="cosine")
    head, backbone = build_optimizers(config, STEPS)
    assert learning_rate_at(head, 10) == pytest.approx(0.5e-3)
    assert learning_rate_at(backbone, 10) == pytest.approx(0.5e-4)
    assert head.weight_decay == backbone.weight_decay == pytest.approx(1e-4)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_warm_up_and_frozen_backbones_follow_their_formulas(schedule):
    config = TrainConfig(epochs=5, learning_rate=0.1, schedule=schedule, warmup_steps=4,
                         backbone_frozen_steps=10)
    head, backbone = build_optimizers(config, STEPS)
    for step in (0, 1, 3, 4, 9, 10, 11, 13, 14, 30):
        after = reference_learning_rate(config, step)
        np.testing.assert_allclose(learning_rate_at(head, step), after * min((step + 1) / 4, 1),
                                   rtol=1e-5, atol=1e-9)
        frozen = 0.0 if step < 10 else after * min((step - 10 + 1) / 4, 1)
        np.testing.assert_allclose(learning_rate_at(backbone, step), frozen, rtol=1e-5, atol=1e-9)


def test_warm_up_schedule_round_trips_its_config():
    original = WarmUp(keras.optimizers.schedules.CosineDecay(0.1, 50), 4, start=2)
    restored = WarmUp.from_config(original.get_config())
    for step in (0, 2, 5, 40):
        assert float(restored(step)) == pytest.approx(float(original(step)))


@pytest.mark.parametrize("key", ["train.schedule", "loss.mining", "cohort.teachers"])
def test_config_supports_exactly_the_registered_names(key):
    from dmml_tf.losses.triplet import MINERS
    from dmml_tf.config import TEACHERS

    registered = {"train.schedule": SCHEDULES, "loss.mining": MINERS, "cohort.teachers": TEACHERS}[key]
    with pytest.raises(ConfigError) as error:
        load_config(None, [f"{key}=unknown"])
    supported = re.search(r"supports: (.*)\. Received", str(error.value)).group(1).split(", ")
    assert sorted(supported) == sorted(registered)
    for name in registered:
        load_config(None, [f"{key}={name}"])


def test_learning_rate_logger_adds_both_learning_rates():
    class Model:
        optimizer = keras.optimizers.Adam(0.01)
        backbone_optimizer = keras.optimizers.Adam(0.001)

    logger = LearningRateLogger()
    logger.set_model(Model())
    logs = {"loss": 1.0}
    logger.on_train_batch_end(0, logs)
    assert logs == pytest.approx({"loss": 1.0, "learning_rate": 0.01, "backbone_learning_rate": 0.001})
