"""One DM2 step on one device and under MirroredStrategy with 2 logical CPUs, for
test_multi_replica.py. Logical devices must be set before TensorFlow initialises, hence
a separate process. Prints one JSON line per case: the loss on each side and the largest
difference of the loss, every gradient and every shadow weight."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import dmml_tf.losses  # noqa: E402
from dmml_tf.models.backbones import tiny_cnn  # noqa: E402
from dmml_tf.config import ViewsConfig  # noqa: E402
from dmml_tf.data.views import build_views  # noqa: E402
from dmml_tf.models.embedder import build_embedder, synchronise_batchnorm  # noqa: E402
from dmml_tf.training.dm2 import DM2Model  # noqa: E402

SIZE, LEARNING_RATE = 32, 1.0


def step(strategy, case, images, labels):
    """Initial weights, weights after one SGD step, shadow weights, and the loss."""
    if "plain" in case:
        return plain_step(strategy, case, images, labels)
    frozen = not case.get("batchnorm_trains", False)
    with strategy.scope():
        members = [build_embedder(tiny_cnn((SIZE, SIZE, 3), seed=s), 8, seed=s, freeze_batchnorm=frozen,
                                  name=f"member{s}") for s in (0, 1)]
        if not frozen and strategy.num_replicas_in_sync > 1:
            for member in members:
                assert synchronise_batchnorm(member) == 2  # tiny_cnn's two BatchNorm layers
        views = build_views(ViewsConfig(), 2, seed=0) if case.get("views") else None
        model = DM2Model(members, views, relational_weight=10.0, ema_decay=0.9, **case["model"])
        backbone_optimizer = keras.optimizers.SGD(LEARNING_RATE / 2) if case["two_optimizers"] else None
        model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE),
                      backbone_optimizer=backbone_optimizer)
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(images, labels, batch_size=len(labels), epochs=1, shuffle=False, verbose=0)
    after = [w.numpy() for w in model.trainable_weights]
    # Shadows hold every weight of their members: BatchNorm's moving statistics too.
    shadows = [w for shadow in model.shadows for w in shadow.get_weights()]
    gradients = [(b - a) / LEARNING_RATE for b, a in zip(before, after)]
    return history.history["loss"][0], gradients, shadows


def plain_step(strategy, case, images, labels):
    """The same for one embedder compiled with a loss wrapper of dmml_tf.losses (no
    shadows): the wrapper must see the global batch."""
    with strategy.scope():
        model = build_embedder(tiny_cnn((SIZE, SIZE, 3), seed=0), 8, seed=0)
        model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE),
                      loss=getattr(dmml_tf.losses, case["plain"])())
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(images, labels, batch_size=len(labels), epochs=1, shuffle=False, verbose=0)
    gradients = [(b - a.numpy()) / LEARNING_RATE for b, a in zip(before, model.trainable_weights)]
    return history.history["loss"][0], gradients, []


def main():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, SIZE, SIZE, 3)).astype("float32")
    labels = np.repeat(np.arange(4), 4).astype("int32")
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    for case in json.loads(sys.argv[1]):
        keras.config.set_floatx(case["floatx"])
        keras.utils.set_random_seed(0)
        one_loss, one_gradients, one_shadows = step(tf.distribute.get_strategy(), case, images, labels)
        keras.utils.set_random_seed(0)
        two_loss, two_gradients, two_shadows = step(mirrored, case, images, labels)
        print(json.dumps({
            "case": case,
            "loss": [one_loss, two_loss],
            "gradient_max": float(max(np.abs(g).max() for g in one_gradients)),
            "gradient_difference": float(max(np.abs(a - b).max()
                                             for a, b in zip(one_gradients, two_gradients))),
            "shadow_difference": float(max((np.abs(a - b).max()
                                            for a, b in zip(one_shadows, two_shadows)), default=0.0)),
        }), flush=True)


if __name__ == "__main__":
    main()
