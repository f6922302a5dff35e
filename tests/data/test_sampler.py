import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from dmml_tf.data.sampler import (batch_indices, check_replicas, class_balanced_dataset,
                                  epoch_batches, steps_per_epoch)
from dmml_tf.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

# 9 classes: sizes 1 to 9, so several classes have fewer than K images.
LABELS = np.repeat(np.arange(9), np.arange(1, 10))


def one_epoch(labels, classes_per_batch, images_per_class, seed):
    return epoch_batches(labels, classes_per_batch, images_per_class, np.random.default_rng(seed))


@pytest.mark.parametrize("classes_per_batch, images_per_class", [(2, 2), (3, 4), (4, 3), (8, 2)],
                         ids=["P2K2", "P3K4", "P4K3", "P8K2"])
@pytest.mark.parametrize("seed", [0, 1])
def test_every_image_once_per_epoch_plus_only_fill_ins(classes_per_batch, images_per_class, seed):
    batches = one_epoch(LABELS, classes_per_batch, images_per_class, seed)
    counts = Counter(np.concatenate(batches).tolist())
    assert set(counts) == set(range(len(LABELS)))  # every image, including singletons
    # Repeats: chunk top-ups (K - size % K per class) and the chunks completing the last batch.
    chunks = sum(-(-size // images_per_class) for size in range(1, 10))
    top_ups = sum(-size % images_per_class for size in range(1, 10))
    last_fill = (-chunks % classes_per_batch) * images_per_class
    assert sum(counts.values()) - len(LABELS) == top_ups + last_fill
    assert len(batches) == steps_per_epoch(LABELS, classes_per_batch, images_per_class)


@pytest.mark.parametrize("classes_per_batch, images_per_class", [(3, 4), (4, 2)])
def test_each_batch_is_p_chunks_of_k_images_of_one_class(classes_per_batch, images_per_class):
    for batch in one_epoch(LABELS, classes_per_batch, images_per_class, seed=3):
        assert batch.shape == (classes_per_batch * images_per_class,)
        chunk_labels = LABELS[batch].reshape(classes_per_batch, images_per_class)
        assert np.all(chunk_labels == chunk_labels[:, :1])


def test_class_balance_over_an_epoch_follows_class_size():
    labels = np.repeat(np.arange(6), [2, 4, 4, 8, 12, 1])
    batches = one_epoch(labels, 2, 4, seed=0)
    per_class = Counter(labels[np.concatenate(batches)].tolist())
    # Each class fills ceil(n / K) chunks of K; the last batch adds at most one chunk.
    for label, size in enumerate([2, 4, 4, 8, 12, 1]):
        assert per_class[label] - 4 * -(-size // 4) in (0, 4)


def test_a_class_with_one_image_repeats_it():
    labels = np.array([0, 1, 1, 1, 1, 2, 2])
    batches = one_epoch(labels, 3, 4, seed=0)
    singleton_chunks = [chunk for batch in batches for chunk in batch.reshape(-1, 4)
                        if labels[chunk[0]] == 0]
    assert singleton_chunks and all(np.all(chunk == 0) for chunk in singleton_chunks)


def test_deterministic_for_a_seed_and_epochs_differ():
    first = batch_indices(LABELS, 3, 2, seed=5)
    again = batch_indices(LABELS, 3, 2, seed=5)
    other = batch_indices(LABELS, 3, 2, seed=6)
    steps = steps_per_epoch(LABELS, 3, 2)
    a = [next(first) for _ in range(2 * steps)]
    b = [next(again) for _ in range(2 * steps)]
    c = [next(other) for _ in range(2 * steps)]
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    assert not np.array_equal(np.stack(a), np.stack(c))
    assert not np.array_equal(np.stack(a[:steps]), np.stack(a[steps:]))  # a new shuffle per epoch


def test_a_stream_started_at_a_step_goes_on_as_the_one_started_at_0():
    steps = steps_per_epoch(LABELS, 3, 2)
    whole = batch_indices(LABELS, 3, 2, seed=5)
    expected = [next(whole) for _ in range(3 * steps)]
    for start in (1, steps, 2 * steps + 1):
        resumed = batch_indices(LABELS, 3, 2, seed=5, start=start)
        np.testing.assert_array_equal(np.stack([next(resumed) for _ in range(3 * steps - start)]),
                                      np.stack(expected[start:]))
    images = (np.arange(len(LABELS))[:, None, None, None] * np.ones((1, 4, 4, 3))).astype(np.uint8)
    first, = class_balanced_dataset(images, LABELS, 3, 2, seed=5, start=steps + 1).take(1)
    np.testing.assert_array_equal(first[0].numpy()[:, 0, 0, 0], expected[steps + 1])


def test_in_memory_dataset_yields_the_sampled_images():
    images = (np.arange(len(LABELS))[:, None, None, None] * np.ones((1, 4, 4, 3))).astype(np.uint8)
    dataset = class_balanced_dataset(images, LABELS, 3, 2, seed=7)
    expected = batch_indices(LABELS, 3, 2, seed=7)
    for batch_images, batch_labels in dataset.take(3):
        indices = next(expected)
        np.testing.assert_array_equal(batch_images.numpy()[:, 0, 0, 0], indices)
        np.testing.assert_array_equal(batch_labels.numpy(), LABELS[indices])


def test_uneven_replica_split_is_a_config_error():
    check_replicas(4, 4, 2)
    check_replicas(3, 4, 4)
    with pytest.raises(ConfigError, match=r"split evenly across 2 replicas.*data.classes_per_batch=3"):
        check_replicas(3, 3, 2)


@pytest.mark.slow
def test_global_batch_splits_evenly_across_two_replicas():
    script = textwrap.dedent("""
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from dmml_tf.data.sampler import class_balanced_dataset
        labels = np.repeat(np.arange(8), 5)
        images = np.zeros((40, 2, 2, 3), np.uint8)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        batches = class_balanced_dataset(images, labels, 4, 2, 0).take(2)
        for _, batch_labels in strategy.experimental_distribute_dataset(batches):
            for part in strategy.experimental_local_results(batch_labels):
                pairs = part.numpy().reshape(-1, 2)  # whole K-chunks on each replica
                print(len(part.numpy()), bool(np.all(pairs[:, 0] == pairs[:, 1])))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["4", "True"] * 4
