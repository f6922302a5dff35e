"""Nearest-neighbour search over unit embeddings: exact TF search and ScaNN searchers.

Similarity is the dot product, which ranks unit vectors exactly as Euclidean distance
does (`||a - b||^2 = 2 - 2 a.b`). When the queries are gallery rows (leave-one-out
retrieval), `query_ids` names each query's own row so it is never its own neighbour.
`dmml_tf.retrieval.index.GalleryIndex` puts these together.
"""

import math

import numpy as np
import tensorflow as tf

# The exact search scores one (queries x gallery chunk) block at a time; 2**24 float32
# scores (64 MB) keep memory flat on large galleries while each matmul stays large.
_EXACT_BLOCK_SCORES = 2**24
# Queries scored together at least; each such block reads the gallery once.
_EXACT_MIN_QUERIES = 1024

# ScaNN tree settings for galleries above the exact threshold. The tree has 2 sqrt(G)
# leaves: on 1M clustered vectors (benchmarks/search.py) searching 5% of 2,000 leaves
# found 99% of the exact top-10, 5% of 1,000 leaves only 93%. A query scores at least
# this many vectors, and this share of the leaves, with asymmetric hashing. On synthetic
# clustered data, searching half the leaves of a 5k gallery already changed Recall@1;
# scoring 20k costs milliseconds.
SCANN_LEAVES_PER_SQRT = 2
SCANN_MIN_SCORED = 20_000
SCANN_MIN_SEARCHED = 0.05
# Candidates rescored exactly; 256 still let hashing errors swap a few rows in 5k.
SCANN_RESCORED = 1000
# The tree's k-means trains on at most this many gallery vectors.
SCANN_TRAINING_SAMPLE = 250_000


def exact_neighbors(queries, gallery, k, query_ids=None):
    """Exact top-`k` by dot product, blocked over queries and gallery.

    A block of up to 1,024 queries (more on small galleries) is scored against one
    chunk of the gallery at a time, each chunk's top-k is kept and the candidates are
    merged: memory stays at one block of scores, and each block of queries reads the
    gallery once, so large galleries are not re-read for every few queries.

    Args:
        queries: float32 array of shape `(N, d)`.
        gallery: float32 array of shape `(G, d)`.
        k: int. Number of neighbours per query.
        query_ids: int array of shape `(N,)` or `None`. Gallery row of each query,
            skipped in its results. Defaults to `None`.

    Returns:
        Tuple `(indices, scores)`: int64 and float32 arrays of shape `(N, k)`, best
        first; among equal scores the lower index comes first.
    """
    batch_size = min(len(queries), max(_EXACT_MIN_QUERIES, _EXACT_BLOCK_SCORES // len(gallery)))
    chunk_size = max(k, _EXACT_BLOCK_SCORES // batch_size)
    # Each chunk becomes a tensor only while it is scored: no second copy of the gallery.
    chunks = [(start, gallery[start:start + chunk_size])
              for start in range(0, len(gallery), chunk_size)]
    own = None if query_ids is None else np.asarray(query_ids, np.int64)
    indices, scores = [], []
    for start in range(0, len(queries), batch_size):
        batch = tf.constant(queries[start:start + batch_size])
        batch_own = None if own is None else own[start:start + batch_size]
        candidates = [_chunk_top_k(batch, chunk, offset, k, batch_own)
                      for offset, chunk in chunks]
        # Chunks come in gallery order and top_k is stable, so ties keep the lower index.
        candidate_scores = tf.concat([c[1] for c in candidates], axis=1)
        candidate_indices = tf.concat([c[0] for c in candidates], axis=1)
        top = tf.math.top_k(candidate_scores, k=k)
        indices.append(tf.gather(candidate_indices, top.indices, batch_dims=1).numpy())
        scores.append(top.values.numpy())
    return np.concatenate(indices).astype(np.int64), np.concatenate(scores)


def _chunk_top_k(batch, chunk, offset, k, own):
    """Top-`k` (or the whole chunk) of one chunk, as gallery indices and scores."""
    block = tf.linalg.matmul(batch, tf.constant(chunk), transpose_b=True)
    if own is not None:
        local = own - offset
        inside = (local >= 0) & (local < len(chunk))
        rows = np.flatnonzero(inside)
        if len(rows):
            positions = np.stack([rows, local[inside]], axis=1)
            block = tf.tensor_scatter_nd_update(block, positions,
                                                tf.fill([len(rows)], -np.inf))
    # top_k breaks ties towards the lower index: a canonical order to test against.
    top = tf.math.top_k(block, k=min(k, len(chunk)))
    return tf.cast(top.indices, tf.int64) + offset, top.values


def scann_settings(gallery_size, exact_below):
    """ScaNN settings for a gallery: brute force below `exact_below`, else a tree.

    A tree has about 2 sqrt(G) leaves; each query searches enough leaves to score at least
    20,000 vectors (and at least 5% of the leaves) with 4-bit asymmetric hashing over
    2-dimension blocks, then rescores the best 1,000 candidates exactly.

    Args:
        gallery_size: int. Number of gallery vectors G.
        exact_below: int. Galleries smaller than this are scored exactly.

    Returns:
        dict: `{"mode": "brute_force"}` or `{"mode": "tree", "num_leaves": ...,
        "num_leaves_to_search": ..., "training_sample_size": ..., "reorder": ...}`.
    """
    if gallery_size < exact_below:
        return {"mode": "brute_force"}
    num_leaves = max(1, round(SCANN_LEAVES_PER_SQRT * math.sqrt(gallery_size)))
    leaf_size = gallery_size / num_leaves
    leaves_to_search = max(math.ceil(SCANN_MIN_SEARCHED * num_leaves),
                           math.ceil(SCANN_MIN_SCORED / leaf_size))
    return {
        "mode": "tree",
        "num_leaves": num_leaves,
        "num_leaves_to_search": min(num_leaves, leaves_to_search),
        "training_sample_size": min(gallery_size, SCANN_TRAINING_SAMPLE),
        "reorder": min(gallery_size, SCANN_RESCORED),
    }


def build_scann_searcher(gallery, settings):
    """Builds a ScaNN dot-product searcher with `settings` from `scann_settings`.

    Args:
        gallery: float32 array of shape `(G, d)`, unit rows.
        settings: dict. See `scann_settings`.

    Returns:
        A `scann.scann_ops_pybind.ScannSearcher`.
    """
    from scann import scann_ops_pybind  # Heavy import, only needed by this backend.

    # The neighbour count given here is a default; every search passes its own.
    builder = scann_ops_pybind.builder(gallery, 10, "dot_product")
    if settings["mode"] == "brute_force":
        return builder.score_brute_force().build()
    return (
        builder.tree(
            num_leaves=settings["num_leaves"],
            num_leaves_to_search=settings["num_leaves_to_search"],
            training_sample_size=settings["training_sample_size"],
            spherical=True,  # Unit vectors: centroids on the sphere partition better.
        )
        .score_ah(2, anisotropic_quantization_threshold=0.2)
        .reorder(settings["reorder"])
        .build()
    )


def scann_search(searcher, settings, queries, k):
    """Top-`k` of `queries` with a searcher from `build_scann_searcher`.

    Returns:
        Tuple `(indices, scores)`: int64 and float32 arrays of shape `(N, k)`.
    """
    reorder = None if settings["mode"] == "brute_force" else max(settings["reorder"], k)
    indices, scores = searcher.search_batched_parallel(
        queries, final_num_neighbors=k, pre_reorder_num_neighbors=reorder
    )
    return np.asarray(indices, dtype=np.int64), np.asarray(scores, dtype=np.float32)


def drop_self(indices, scores, k, query_ids):
    """Removes each query's own row from its neighbour list, keeping rank order.

    The query is usually rank 0, but among exact duplicates it may come later or be
    missing from the list altogether; then the list's last entry is dropped instead.

    Args:
        indices: int array of shape `(N, k + 1)`; row `i` holds neighbours of query `i`.
        scores: float array of shape `(N, k + 1)`, their scores.
        k: int. Number of neighbours to keep.
        query_ids: int array of shape `(N,)`. The gallery row of each query.

    Returns:
        Tuple `(indices, scores)` of shape `(N, k)`.
    """
    is_self = indices == np.asarray(query_ids)[:, None]
    # A stable sort on the self flag moves the query last and keeps the others' order.
    order = np.argsort(is_self, axis=1, kind="stable")[:, :k]
    return (np.take_along_axis(indices, order, axis=1).astype(np.int64),
            np.take_along_axis(scores, order, axis=1))
