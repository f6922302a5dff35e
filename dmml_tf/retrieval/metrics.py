"""Retrieval metrics: Recall@K, MAP@R, R-Precision, MRR, k-NN accuracy and NMI.

Protocol (as in the CUB-200-2011 and CARS-196 literature and in Musgrave et al., *A
Metric Learning Reality Check*, ECCV 2020): the test split is both the queries and the
gallery, and each query's own image is never its neighbour; or (In-Shop, SOP-style
protocols) separate query and gallery sets. For a query of class c, R is the number of
(other) images of class c in the gallery.

- Recall@K: share of queries with a same-class image among their K nearest.
- R-Precision: share of same-class images among a query's R nearest.
- MAP@R: mean over the R nearest of the precision at each same-class rank,
  `(1/R) * sum_{i<=R} P(i) * rel(i)`: like R-Precision, but rewards ranking the
  same-class images first.
- MRR: mean over queries of 1 / rank of the first same-class image among the searched
  neighbours (max(K, R) of them; 0 if none is among them).
- k-NN accuracy: share of queries whose K nearest (K = max of the Recall@K cut-offs)
  vote for their class: the most frequent label among them, ties to the nearest.
- NMI: normalised mutual information (arithmetic-mean normalisation) between the labels
  and a k-means clustering of the embeddings into as many clusters as classes.

Queries whose class has a single image (R = 0) cannot be answered right and are
excluded from the retrieval metrics, as pytorch-metric-learning's `AccuracyCalculator`
does; they still count for NMI. The functions here take the neighbours' labels, nearest
first, and return one value per query; `dmml_tf.retrieval.evaluate` averages them.
"""

import numpy as np

from dmml_tf.errors import ConfigError

DEFAULT_KS = (1, 2, 4, 8)


def recall_hits(neighbor_labels, query_labels, ks=DEFAULT_KS):
    """Returns, per query and K, whether a same-label item is among the K nearest.

    Args:
        neighbor_labels: int array of shape `(N, k)`. Labels of every query's
            neighbours, nearest first, with `k >= max(ks)`.
        query_labels: int array of shape `(N,)`. The queries' own labels.
        ks: sequence of int. The cut-offs K. Defaults to `(1, 2, 4, 8)`.

    Returns:
        bool array of shape `(N, len(ks))`.
    """
    neighbor_labels, query_labels = _check_shapes(neighbor_labels, query_labels)
    check_ks(ks, neighbor_labels.shape[1])
    # Column j says whether a hit occurred among the first j + 1 neighbours.
    hit_within = np.logical_or.accumulate(neighbor_labels == query_labels[:, None], axis=1)
    return hit_within[:, [k - 1 for k in ks]]


def recall_at_k(neighbor_labels, query_labels, ks=DEFAULT_KS):
    """Returns the share of queries with a same-label item among their K nearest.

    Args: as `recall_hits`.

    Returns:
        dict mapping `"recall@K"` to a float in [0, 1], in the order of `ks`.

    Example:

    >>> recall_at_k(np.array([[1, 0], [2, 1]]), np.array([0, 1]), ks=(1, 2))
    {'recall@1': 0.0, 'recall@2': 1.0}
    """
    hits = recall_hits(neighbor_labels, query_labels, ks)
    return {f"recall@{k}": float(hits[:, i].mean()) for i, k in enumerate(ks)}


def reciprocal_ranks(neighbor_labels, query_labels):
    """Returns each query's 1 / rank of its first same-label neighbour (0 if none).

    Args: as `recall_hits`, without `ks`.

    Returns:
        float array of shape `(N,)`; its mean is the MRR.
    """
    neighbor_labels, query_labels = _check_shapes(neighbor_labels, query_labels)
    relevant = neighbor_labels == query_labels[:, None]
    first = relevant.argmax(axis=1)
    return np.where(relevant.any(axis=1), 1.0 / (first + 1), 0.0)


def knn_votes(neighbor_labels, query_labels, k):
    """Returns, per query, whether the majority label of its k nearest is its own; a tie
    goes to the tied label whose nearest neighbour comes first.

    Args:
        neighbor_labels: int array of shape `(N, m)`, nearest first, `m >= k`.
        query_labels: int array of shape `(N,)`.
        k: int. The number of voting neighbours.

    Returns:
        bool array of shape `(N,)`.
    """
    neighbor_labels, query_labels = _check_shapes(neighbor_labels, query_labels)
    check_ks((k,), neighbor_labels.shape[1])
    voters = neighbor_labels[:, :k]
    # votes[q, i]: how many of the k nearest share neighbour i's label.
    votes = (voters[:, :, None] == voters[:, None, :]).sum(axis=2)
    winner = voters[np.arange(len(voters)), votes.argmax(axis=1)]  # argmax: the first, nearest
    return winner == query_labels


def r_precision(neighbor_labels, query_labels, relevant_counts):
    """Returns each query's share of same-label items among its R nearest.

    Args:
        neighbor_labels: int array of shape `(N, k)`, nearest first, with
            `k >= max(relevant_counts)`.
        query_labels: int array of shape `(N,)`.
        relevant_counts: int array of shape `(N,)`. R of each query, at least 1.

    Returns:
        float array of shape `(N,)`.
    """
    relevant, within_r, counts = _relevance(neighbor_labels, query_labels, relevant_counts)
    return (relevant & within_r).sum(axis=1) / counts


def average_precision_at_r(neighbor_labels, query_labels, relevant_counts):
    """Returns each query's AP@R: `(1/R) * sum_{i<=R} P(i) * rel(i)`.

    Args: as `r_precision`.

    Returns:
        float array of shape `(N,)`; its mean is MAP@R.
    """
    relevant, within_r, counts = _relevance(neighbor_labels, query_labels, relevant_counts)
    ranks = np.arange(1, relevant.shape[1] + 1)
    precision = np.cumsum(relevant, axis=1) / ranks
    return (precision * (relevant & within_r)).sum(axis=1) / counts


def normalized_mutual_information(labels, clusters):
    """NMI between two labelings: `I(L; C) / ((H(L) + H(C)) / 2)`.

    Args:
        labels: int array of shape `(N,)`. Class labels.
        clusters: int array of shape `(N,)`. Cluster assignments.

    Returns:
        float in [0, 1]; 1 when both labelings are the same up to renaming. Two
        single-group labelings give 1.
    """
    labels, clusters = np.asarray(labels), np.asarray(clusters)
    if labels.shape != clusters.shape or labels.ndim != 1:
        raise ValueError("Expected two label arrays of the same shape (N,). Received: "
                         f"labels.shape={labels.shape}, clusters.shape={clusters.shape}")
    _, label_ids = np.unique(labels, return_inverse=True)
    _, cluster_ids = np.unique(clusters, return_inverse=True)
    joint = np.zeros((label_ids.max() + 1, cluster_ids.max() + 1))
    np.add.at(joint, (label_ids, cluster_ids), 1.0)
    joint /= len(labels)
    label_p, cluster_p = joint.sum(axis=1), joint.sum(axis=0)
    nonzero = joint > 0
    outer = np.outer(label_p, cluster_p)
    mutual = float(np.sum(joint[nonzero] * np.log(joint[nonzero] / outer[nonzero])))
    mean_entropy = (_entropy(label_p) + _entropy(cluster_p)) / 2
    if mean_entropy == 0.0:
        return 1.0
    return min(1.0, max(0.0, mutual / mean_entropy))


def check_ks(ks, max_k):
    """Raises a ConfigError unless `ks` lists integers in [1, max_k]."""
    ks = tuple(ks)
    valid = [isinstance(k, (int, np.integer)) and 1 <= k <= max_k for k in ks]
    if not ks or not all(valid):
        raise ConfigError(
            f"ks must be a non-empty list of integers between 1 and {max_k}. "
            f"Received: ks={ks}"
        )


def _entropy(p):
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


def _relevance(neighbor_labels, query_labels, relevant_counts):
    neighbor_labels, query_labels = _check_shapes(neighbor_labels, query_labels)
    counts = np.asarray(relevant_counts)
    if counts.shape != query_labels.shape or counts.min(initial=1) < 1:
        raise ValueError("Expected one R >= 1 per query. Received: "
                         f"relevant_counts={counts!r}")
    if counts.max(initial=0) > neighbor_labels.shape[1]:
        raise ValueError(f"Need at least max(R) = {counts.max()} neighbours per query. "
                         f"Received: neighbor_labels.shape={neighbor_labels.shape}")
    relevant = neighbor_labels == query_labels[:, None]
    within_r = np.arange(neighbor_labels.shape[1]) < counts[:, None]
    return relevant, within_r, counts


def _check_shapes(neighbor_labels, query_labels):
    neighbor_labels = np.asarray(neighbor_labels)
    query_labels = np.asarray(query_labels)
    if neighbor_labels.ndim != 2 or query_labels.shape != neighbor_labels.shape[:1]:
        raise ValueError(
            "Expected neighbor_labels of shape (N, k) and query_labels of shape (N,). "
            f"Received: neighbor_labels.shape={neighbor_labels.shape}, "
            f"query_labels.shape={query_labels.shape}"
        )
    return neighbor_labels, query_labels
