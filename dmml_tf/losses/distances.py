"""Pairwise Euclidean distances whose gradient stays finite on the diagonal."""

import tensorflow as tf


def pairwise_distances(embeddings):
    """Euclidean distances between all rows of `embeddings`, `(N, N)`.

    The diagonal is exactly zero. `sqrt` has an infinite slope at zero, so squared
    distances are clamped away from zero before the root (the clamp passes no gradient)
    and the diagonal is masked afterwards: identical rows give zero, never NaN.

    Args:
        embeddings: float tensor `(N, d)`.
    """
    embeddings = tf.convert_to_tensor(embeddings)
    dot = tf.matmul(embeddings, embeddings, transpose_b=True)
    squared_norms = tf.linalg.diag_part(dot)
    squared = squared_norms[:, None] - 2.0 * dot + squared_norms[None, :]
    distances = tf.sqrt(tf.maximum(squared, 1e-12))
    off_diagonal = 1.0 - tf.eye(tf.shape(embeddings)[0], dtype=distances.dtype)
    return distances * off_diagonal
