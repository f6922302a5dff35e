"""Recall@K, the retrieval metric deep metric learning papers report.

Protocol (as in the CUB-200-2011 and CARS-196 literature): the test split is both the
queries and the gallery, each query's own image is excluded, and a query is a hit at K
when any of its K nearest neighbours has its label. A query whose class has a single
image in the split has no correct neighbour and is always a miss; such queries are
kept, as the standard protocol does, so Recall@K on a split with singleton classes is
bounded below 1.
"""

import numpy as np

from dmml_tf.errors import ConfigError
from dmml_tf.retrieval.search import nearest_neighbors

DEFAULT_KS = (1, 2, 4, 8)


def recall_at_k(neighbor_labels, query_labels, ks=DEFAULT_KS):
    """Returns the share of queries with a same-label item among their K nearest.

    Args:
        neighbor_labels: int array of shape `(N, k)`. Labels of every query's
            neighbours, nearest first, with `k >= max(ks)`.
        query_labels: int array of shape `(N,)`. The queries' own labels.
        ks: sequence of int. The cut-offs K. Defaults to `(1, 2, 4, 8)`.

    Returns:
        dict mapping `"recall@K"` to a float in [0, 1], in the order of `ks`.

    Example:

    >>> recall_at_k(np.array([[1, 0], [2, 1]]), np.array([0, 1]), ks=(1, 2))
    {'recall@1': 0.0, 'recall@2': 1.0}
    """
    neighbor_labels = np.asarray(neighbor_labels)
    query_labels = np.asarray(query_labels)
    if neighbor_labels.ndim != 2 or query_labels.shape != neighbor_labels.shape[:1]:
        raise ValueError(
            "Expected neighbor_labels of shape (N, k) and query_labels of shape (N,). "
            f"Received: neighbor_labels.shape={neighbor_labels.shape}, "
            f"query_labels.shape={query_labels.shape}"
        )
    _check_ks(ks, neighbor_labels.shape[1])
    # Column j says whether a hit occurred among the first j + 1 neighbours.
    hit_within = np.logical_or.accumulate(
        neighbor_labels == query_labels[:, None], axis=1
    )
    return {f"recall@{k}": float(hit_within[:, k - 1].mean()) for k in ks}


def evaluate_retrieval(embeddings, labels, ks=DEFAULT_KS, backend="scann"):
    """Leave-one-out Recall@K of a set of embeddings, the set being its own gallery.

    Args:
        embeddings: float array of shape `(N, d)`. Unit embeddings of the test split.
        labels: int array of shape `(N,)`. Their class labels.
        ks: sequence of int. The cut-offs K. Defaults to `(1, 2, 4, 8)`.
        backend: str. Search backend, `"scann"` or `"exact"` (see
            `dmml_tf.retrieval.search.nearest_neighbors`). Defaults to `"scann"`.

    Returns:
        dict mapping `"recall@K"` to a float in [0, 1], in the order of `ks`.
    """
    labels = np.asarray(labels)
    if labels.shape != (len(embeddings),):
        raise ValueError(
            "Expected one label per embedding. Received: "
            f"labels.shape={labels.shape}, len(embeddings)={len(embeddings)}"
        )
    _check_ks(ks, len(labels) - 1)
    indices = nearest_neighbors(embeddings, max(ks), backend=backend)
    return recall_at_k(labels[indices], labels, ks)


def _check_ks(ks, max_k):
    ks = tuple(ks)
    valid = [isinstance(k, (int, np.integer)) and 1 <= k <= max_k for k in ks]
    if not ks or not all(valid):
        raise ConfigError(
            f"ks must be a non-empty list of integers between 1 and {max_k}. "
            f"Received: ks={ks}"
        )
