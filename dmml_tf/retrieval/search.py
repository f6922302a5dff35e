"""Nearest-neighbour search over unit embeddings: ScaNN, and exact search to verify it.

Similarity is the dot product, which ranks unit vectors exactly as Euclidean distance
does. Evaluation in deep metric learning is leave-one-out: the test split is both the
queries and the gallery, and each query's own row is never its neighbour.
"""

import math

import numpy as np
import tensorflow as tf

from dmml_tf.errors import ConfigError

BACKENDS = ("scann", "exact")

# The exact search scores one (batch x gallery) block at a time; 2**24 float32 scores
# (64 MB) keep memory flat on large galleries while each matmul stays large.
_EXACT_BLOCK_SCORES = 2**24

# Below this gallery size ScaNN scores every vector exactly: it is fast enough, and a
# tree of sqrt(G) leaves would have fewer points per leaf than ScaNN's minimum of 50.
_SCANN_BRUTE_FORCE_BELOW = 2000
# Larger galleries: a query scores at least this many vectors, and this share of the
# tree's leaves, with asymmetric hashing. On synthetic clustered data, searching half
# the leaves of a 5k gallery already changed Recall@1; scoring 20k costs milliseconds.
_SCANN_MIN_SCORED = 20_000
_SCANN_MIN_SEARCHED = 0.05
# Candidates rescored exactly; 256 still let hashing errors swap a few rows in 5k.
_SCANN_RESCORED = 1000


def nearest_neighbors(embeddings, k, backend="scann", gallery=None):
    """Returns the indices of the `k` most similar gallery rows of every query.

    Args:
        embeddings: float array of shape `(N, d)`. The queries, unit length.
        k: int. Number of neighbours per query, best first.
        backend: str. `"scann"` (approximate, configured to agree with exact search on
            galleries of up to 20,000 vectors) or `"exact"` (batched matmul and top-k;
            among equal scores the lower index comes first). Defaults to `"scann"`.
        gallery: float array of shape `(G, d)`, or `None`. The vectors to search. With
            `None`, the queries are also the gallery and each query's own row is
            excluded (leave-one-out retrieval). Defaults to `None`.

    Returns:
        int64 array of shape `(N, k)`: row indices into the gallery.

    Example:

    >>> x = np.eye(3, dtype="float32")[[0, 0, 1, 1]]
    >>> nearest_neighbors(x, k=1, backend="exact")
    array([[1],
           [0],
           [3],
           [2]])
    """
    if backend not in BACKENDS:
        raise ConfigError(
            f"Unknown search backend; expected one of {BACKENDS}. Received: "
            f"backend={backend}"
        )
    queries = _as_matrix(embeddings, "embeddings")
    leave_one_out = gallery is None
    gallery = queries if leave_one_out else _as_matrix(gallery, "gallery")
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(
            "Queries and gallery must have the same dimension. Received: "
            f"embeddings.shape={queries.shape}, gallery.shape={gallery.shape}"
        )
    max_k = len(gallery) - int(leave_one_out)
    if not 1 <= k <= max_k:
        raise ConfigError(
            f"k must be between 1 and {max_k}, the number of gallery vectors a query "
            f"can retrieve. Received: k={k}"
        )
    if backend == "exact":
        return exact_neighbors(queries, gallery, k, leave_one_out)
    return scann_neighbors(queries, gallery, k, leave_one_out)


def exact_neighbors(queries, gallery, k, leave_one_out):
    """Exact top-`k` by dot product, one block of queries at a time.

    Args:
        queries: float32 array of shape `(N, d)`.
        gallery: float32 array of shape `(G, d)`; the queries themselves when
            `leave_one_out`.
        k: int. Number of neighbours per query.
        leave_one_out: bool. Whether query `i` is gallery row `i` and must be skipped.

    Returns:
        int64 array of shape `(N, k)`.
    """
    batch_size = max(1, _EXACT_BLOCK_SCORES // len(gallery))
    gallery_t = tf.constant(gallery)
    blocks = []
    for start in range(0, len(queries), batch_size):
        batch = tf.constant(queries[start : start + batch_size])
        scores = tf.linalg.matmul(batch, gallery_t, transpose_b=True)
        if leave_one_out:
            rows = tf.range(tf.shape(batch)[0])
            self_positions = tf.stack([rows, rows + start], axis=1)
            scores = tf.tensor_scatter_nd_update(
                scores, self_positions, tf.fill([tf.shape(batch)[0]], -np.inf)
            )
        # top_k breaks ties towards the lower index: a canonical order to test against.
        blocks.append(tf.math.top_k(scores, k=k).indices.numpy())
    return np.concatenate(blocks).astype(np.int64)


def scann_neighbors(queries, gallery, k, leave_one_out):
    """Top-`k` by dot product with a ScaNN searcher built for the gallery's size.

    Args:
        queries: float32 array of shape `(N, d)`.
        gallery: float32 array of shape `(G, d)`; the queries themselves when
            `leave_one_out`.
        k: int. Number of neighbours per query.
        leave_one_out: bool. Whether query `i` is gallery row `i` and must be removed.

    Returns:
        int64 array of shape `(N, k)`.
    """
    num_neighbors = k + int(leave_one_out)
    searcher = build_scann_searcher(gallery, num_neighbors)
    indices, _ = searcher.search_batched_parallel(queries)
    indices = np.asarray(indices, dtype=np.int64)
    if leave_one_out:
        return drop_self(indices, k)
    return indices


def build_scann_searcher(gallery, num_neighbors):
    """Builds a ScaNN dot-product searcher sized so it agrees with exact search.

    Galleries under 2,000 vectors are scored by brute force. Larger ones use a k-means
    tree of about sqrt(G) leaves; each query searches enough leaves to score at least
    20,000 vectors (and at least 5% of the leaves) with 4-bit asymmetric hashing over
    2-dimension blocks, then rescores the best 1,000 candidates exactly. Galleries of
    up to 20,000 vectors (every test split here) are thus searched in full and agree
    with exact search; larger ones trade exactness for speed, as ScaNN is meant to.

    Args:
        gallery: float32 array of shape `(G, d)`, unit rows.
        num_neighbors: int. Neighbours returned per query.

    Returns:
        A `scann.scann_ops_pybind.ScannSearcher`.
    """
    from scann import scann_ops_pybind  # Heavy import, only needed by this backend.

    builder = scann_ops_pybind.builder(gallery, num_neighbors, "dot_product")
    size = len(gallery)
    if size < _SCANN_BRUTE_FORCE_BELOW:
        return builder.score_brute_force().build()
    num_leaves = round(math.sqrt(size))
    leaf_size = size / num_leaves
    leaves_to_search = max(
        math.ceil(_SCANN_MIN_SEARCHED * num_leaves),
        math.ceil(_SCANN_MIN_SCORED / leaf_size),
    )
    return (
        builder.tree(
            num_leaves=num_leaves,
            num_leaves_to_search=min(num_leaves, leaves_to_search),
            training_sample_size=size,
            spherical=True,  # Unit vectors: centroids on the sphere partition better.
        )
        .score_ah(2, anisotropic_quantization_threshold=0.2)
        .reorder(min(size, max(_SCANN_RESCORED, num_neighbors)))
        .build()
    )


def drop_self(indices, k):
    """Removes each query's own index from its neighbour list, keeping rank order.

    The query is usually rank 0, but among exact duplicates it may come later or be
    missing from the list altogether; then the list's last entry is dropped instead.

    Args:
        indices: int array of shape `(N, k + 1)`; row `i` holds neighbours of query `i`.
        k: int. Number of neighbours to keep.

    Returns:
        int64 array of shape `(N, k)`.
    """
    is_self = indices == np.arange(len(indices))[:, None]
    # A stable sort on the self flag moves the query last and keeps the others' order.
    order = np.argsort(is_self, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(indices, order, axis=1).astype(np.int64)


def _as_matrix(array, name):
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(
            f"{name} must be a non-empty 2-D array (vectors x dims). Received: "
            f"{name}.shape={array.shape}"
        )
    return array
