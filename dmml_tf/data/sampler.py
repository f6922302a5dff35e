"""Class-balanced P x K batches: `classes_per_batch` classes, `images_per_class` each.

Each epoch, every class's images are shuffled and cut into chunks of K; a short last
chunk is topped up with other images of the same class (a class with fewer than K images
repeats its images, so it is still used). Chunks are shuffled and P of them form a batch,
so every training image appears once per epoch, plus the few repeats that fill the short
chunks and the last batch.

The same index batches drive every dataset: in-memory arrays (`class_balanced_dataset`)
and encoded images streamed from files or TFDS records (`dmml_tf.data.pipeline`).
"""

import itertools

import numpy as np
import tensorflow as tf

from dmml_tf.errors import ConfigError


def class_chunks(labels, images_per_class, rng):
    """One epoch's chunks: a list of index arrays of length K, each from one class."""
    chunks = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        for start in range(0, len(members), images_per_class):
            chunk = members[start:start + images_per_class]
            missing = images_per_class - len(chunk)
            if missing:
                chunk = np.concatenate([chunk, rng.choice(members, missing)])
            chunks.append(chunk)
    return chunks


def epoch_batches(labels, classes_per_batch, images_per_class, rng):
    """One epoch of batches, each an index array of length P * K.

    The last batch is completed with chunks drawn at random, so every batch has the
    same shape.
    """
    chunks = class_chunks(labels, images_per_class, rng)
    order = list(rng.permutation(len(chunks)))
    short = -len(order) % classes_per_batch
    order += list(rng.choice(len(chunks), short, replace=len(chunks) < short))
    batches = np.array([chunks[i] for i in order]).reshape(-1, classes_per_batch * images_per_class)
    return list(batches)


def steps_per_epoch(labels, classes_per_batch, images_per_class):
    """Number of batches `epoch_batches` makes for these labels (independent of the seed)."""
    counts = np.unique(labels, return_counts=True)[1]
    chunks = int(np.sum(-(-counts // images_per_class)))
    return -(-chunks // classes_per_batch)


def batch_indices(labels, classes_per_batch, images_per_class, seed, start=0):
    """Endless iterator of P x K index batches, epoch after epoch, deterministic for `seed`.

    Args:
        start: int. Index of the first batch yielded: from there on, the batches of the
            stream that starts at 0 (a resumed run goes on at its checkpoint's step). The
            batches before it are drawn and dropped, milliseconds of numpy an epoch.
            Defaults to `0`.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)

    def endless():
        while True:
            yield from epoch_batches(labels, classes_per_batch, images_per_class, rng)

    return itertools.islice(endless(), start, None)


def check_replicas(classes_per_batch, images_per_class, replicas):
    """Raise a ConfigError unless the global batch splits evenly across `replicas`."""
    if (classes_per_batch * images_per_class) % replicas:
        raise ConfigError(
            f"The global batch (data.classes_per_batch x data.images_per_class = "
            f"{classes_per_batch} x {images_per_class}) must split evenly across {replicas} "
            "replicas; change data.classes_per_batch. "
            f"Received: data.classes_per_batch={classes_per_batch}")


def class_balanced_dataset(images, labels, classes_per_batch, images_per_class, seed, start=0):
    """Endless `tf.data.Dataset` of `(images, labels)` P x K batches from in-memory arrays.

    Args:
        images: uint8 array `(N, H, W, 3)`.
        labels: int array `(N,)`.
        classes_per_batch: int. P.
        images_per_class: int. K.
        seed: int. Makes the sequence of batches deterministic.
        start: int. The first batch (see `batch_indices`). Defaults to `0`.
    """
    labels = np.asarray(labels)

    def generate():
        for batch in batch_indices(labels, classes_per_batch, images_per_class, seed, start):
            yield images[batch], labels[batch].astype(np.int32)

    batch_size = classes_per_batch * images_per_class
    signature = (
        tf.TensorSpec((batch_size, *images.shape[1:]), tf.uint8),
        tf.TensorSpec((batch_size,), tf.int32),
    )
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return dataset.map(lambda x, y: (tf.cast(x, tf.float32), y)).prefetch(2)
