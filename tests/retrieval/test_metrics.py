import math

import numpy as np
import pytest
from retrieval_helpers import naive_average_precision, naive_r_precision

from dmml_tf.errors import ConfigError
from dmml_tf.retrieval.metrics import (average_precision_at_r,
                                       normalized_mutual_information, r_precision,
                                       recall_at_k)


def naive_recall(neighbor_labels, query_labels, ks):
    """A query is a hit at K when one of its first K neighbours shares its label."""
    recall = {}
    for k in ks:
        hits = 0
        for i in range(len(query_labels)):
            for j in range(k):
                if neighbor_labels[i][j] == query_labels[i]:
                    hits += 1
                    break
        recall[f"recall@{k}"] = hits / len(query_labels)
    return recall


def naive_nmi(labels, clusters):
    n = len(labels)
    mutual = 0.0
    for a in set(labels):
        for b in set(clusters):
            joint = sum(1 for x, y in zip(labels, clusters) if x == a and y == b)
            if joint:
                count_a = sum(1 for x in labels if x == a)
                count_b = sum(1 for y in clusters if y == b)
                mutual += joint / n * math.log(n * joint / (count_a * count_b))

    def entropy(values):
        return -sum(values.count(v) / n * math.log(values.count(v) / n) for v in set(values))

    return mutual / ((entropy(list(labels)) + entropy(list(clusters))) / 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ks", [(1, 2, 4, 8), (3, 5)], ids=["powers_of_2", "odd"])
def test_recall_matches_naive_loop(seed, ks):
    rng = np.random.default_rng(seed)
    # Few labels, so neighbours often repeat one and many queries hit.
    query_labels = rng.integers(0, 4, size=30)
    neighbor_labels = rng.integers(0, 4, size=(30, 8))
    assert recall_at_k(neighbor_labels, query_labels, ks) == naive_recall(
        neighbor_labels, query_labels, ks
    )


def test_recall_by_hand():
    neighbor_labels = np.array([[1, 0, 0, 0], [1, 1, 1, 1], [2, 2, 0, 2]])
    query_labels = np.array([0, 1, 0])
    assert recall_at_k(neighbor_labels, query_labels, ks=(1, 2, 3)) == {
        "recall@1": 1 / 3,
        "recall@2": 2 / 3,
        "recall@3": 1.0,
    }


def test_precision_metrics_by_hand():
    # Matches at ranks 1 and 3 of R = 3; the match at rank 4 is beyond R.
    neighbor_labels = np.array([[5, 0, 5, 5]])
    query_labels, r = np.array([5]), np.array([3])
    assert r_precision(neighbor_labels, query_labels, r) == pytest.approx([2 / 3])
    assert average_precision_at_r(neighbor_labels, query_labels, r) == pytest.approx(
        [(1 / 1 + 2 / 3) / 3]
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_precision_metrics_match_naive_loop(seed):
    rng = np.random.default_rng(seed)
    query_labels = rng.integers(0, 3, size=40)
    neighbor_labels = rng.integers(0, 3, size=(40, 10))
    relevant_counts = rng.integers(1, 11, size=40)
    expected_r = [naive_r_precision(n, q, r)
                  for n, q, r in zip(neighbor_labels, query_labels, relevant_counts)]
    expected_ap = [naive_average_precision(n, q, r)
                   for n, q, r in zip(neighbor_labels, query_labels, relevant_counts)]
    np.testing.assert_allclose(
        r_precision(neighbor_labels, query_labels, relevant_counts), expected_r, rtol=1e-12)
    np.testing.assert_allclose(
        average_precision_at_r(neighbor_labels, query_labels, relevant_counts),
        expected_ap, rtol=1e-12)


def test_too_few_neighbours_for_r_are_rejected():
    with pytest.raises(ValueError, match=r"max\(R\) = 5"):
        r_precision(np.zeros((2, 4)), np.zeros(2), np.array([1, 5]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nmi_matches_naive_loop(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, size=60)
    # Clusters that partly follow the labels, with other names.
    clusters = np.where(rng.random(60) < 0.6, labels * 3 + 1, rng.integers(0, 7, size=60))
    assert normalized_mutual_information(labels, clusters) == pytest.approx(
        naive_nmi(list(labels), list(clusters)), rel=1e-12
    )


def test_nmi_extremes():
    labels = np.array([0, 0, 1, 1, 2, 2])
    assert normalized_mutual_information(labels, [7, 7, 3, 3, 9, 9]) == pytest.approx(1.0)
    # Every cluster holds one image of each class: no information.
    assert normalized_mutual_information([0, 1, 0, 1], [0, 0, 1, 1]) == pytest.approx(0.0)


@pytest.mark.parametrize(
    "ks", [(), (0, 1), (1, 9), (1.0,)], ids=["empty", "zero", "too_large", "float"]
)
def test_bad_ks_are_rejected(ks):
    with pytest.raises(ConfigError, match=r"Received: ks="):
        recall_at_k(np.zeros((4, 8)), np.zeros(4), ks)
