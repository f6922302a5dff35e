"""A split as a gallery: its images for pictures, its references, thumbnails and index,
and the retrieval grid picture of the run directory."""

import numpy as np
import tensorflow as tf

from dmml_tf.data.pipeline import evaluation_images, evaluation_transform
from dmml_tf.data.sources import ArrayImages
from dmml_tf.retrieval.index import GalleryIndex
from dmml_tf.retrieval.plots import plot_retrieval


def split_images(source, indices, data_config):
    """uint8 images `(len(indices), S, S, 3)` of a split, as evaluation sees them.

    Args:
        source: `ArrayImages` or `EncodedImages`. The split.
        indices: int sequence. Which images.
        data_config: `DataConfig`. `image_size` and `resize_size` are used.
    """
    if isinstance(source, ArrayImages):
        return source.images[np.asarray(indices)]
    images = [evaluation_transform(source.read(tf.constant(source.keys[i])),
                                   data_config.image_size, data_config.resize_size)
              for i in indices]
    return np.stack([np.clip(np.round(image.numpy()), 0, 255) for image in images]).astype(np.uint8)


def split_references(source, split_name, dataset):
    """What each image of a split is: its file or record, or `dataset:split/index`."""
    if isinstance(source, ArrayImages):
        return [f"{dataset}:{split_name}/{i}" for i in range(len(source.labels))]
    return [str(source.describe(key)) for key in source.keys]


def shrink(images, size):
    """uint8 `(N, size, size, 3)` copies of float or uint8 images `(N, H, W, 3)`.

    A box filter: each thumbnail pixel is the mean of the pixels it covers (about seven
    times faster than an antialiased bilinear resize on a CPU, and as free of aliasing).
    """
    small = tf.image.resize(tf.cast(images, tf.float32), [size, size], method="area")
    return np.clip(np.round(small.numpy()), 0, 255).astype(np.uint8)


def thumbnails(source, data_config, size, batch_size=256):
    """uint8 `(N, size, size, 3)` small copies of every image of a split."""
    images = evaluation_images(source, data_config, batch_size)
    batches = images if not isinstance(images, np.ndarray) else (
        images[i:i + batch_size] for i in range(0, len(images), batch_size))
    return np.concatenate([shrink(batch, size) for batch in batches])


def build_gallery_index(embeddings, splits, data_config, evaluate_config, thumbnail_size):
    """A `GalleryIndex` of the test split: embeddings, labels, references, thumbnails.

    Args:
        embeddings: float array `(N, d)`. The test split's embeddings.
        splits: `RetrievalSplits`.
        data_config: `DataConfig`.
        evaluate_config: `EvaluateConfig`. `backend` and `exact_below` are used.
        thumbnail_size: int. Side of the thumbnails, in pixels.
    """
    return GalleryIndex(
        embeddings, splits.test_labels,
        references=split_references(splits.test, "test", splits.name),
        thumbnails=thumbnails(splits.test, data_config, thumbnail_size),
        class_names=list(splits.class_names),
        backend=evaluate_config.backend, exact_below=evaluate_config.exact_below)


def retrieval_grid(embeddings, splits, data_config, evaluate_config, path, network, seed=0):
    """Draws `evaluate_config.grid_queries` random test queries with their nearest
    neighbours (leave-one-out), framed green when of the query's class, red otherwise.

    Args:
        embeddings: float array `(N, d)`. The test split's embeddings by `network`.
        splits: `RetrievalSplits`.
        data_config: `DataConfig`.
        evaluate_config: `EvaluateConfig`.
        path: str or `Path`. The PNG file to write.
        network: str. The network's name, for the title.
        seed: int. Picks the queries. Defaults to `0`.
    """
    labels = np.asarray(splits.test_labels)
    _, label_ids, counts = np.unique(labels, return_inverse=True, return_counts=True)
    # Queries with at least one other image of their class, as evaluation counts them.
    answerable = np.flatnonzero(counts[label_ids] > 1)
    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(answerable, min(evaluate_config.grid_queries, len(answerable)),
                                 replace=False))
    k = min(evaluate_config.grid_neighbors, len(labels) - 1)
    index = GalleryIndex(embeddings, backend=evaluate_config.backend,
                         exact_below=evaluate_config.exact_below)
    neighbors, scores = index.search(index.embeddings[queries], k, query_ids=queries)
    images = split_images(splits.test, np.concatenate([queries, neighbors.ravel()]), data_config)
    names = [_short(splits.class_names[label]) for label in labels]
    distances = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * scores))
    plot_retrieval(
        images[:len(queries)], images[len(queries):].reshape(len(queries), k, *images.shape[1:]),
        path, correct=labels[neighbors] == labels[queries][:, None],
        query_titles=[names[q] for q in queries],
        neighbor_titles=[[f"{names[n]}\nd={d:.2f}" for n, d in zip(row, dist)]
                         for row, dist in zip(neighbors, distances)],
        title=f"{network}: test queries (left) and their {k} nearest test images; "
              "green = same class, red = other class")


def _short(name, length=20):
    name = str(name)
    return name if len(name) <= length else name[:length - 1] + "…"
