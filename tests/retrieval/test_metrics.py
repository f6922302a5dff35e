import numpy as np
import pytest

from dmml_tf.errors import ConfigError
from dmml_tf.retrieval.metrics import evaluate_retrieval, recall_at_k


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


def naive_leave_one_out_labels(embeddings, labels, k):
    """Neighbour labels from a plain loop: best score first, ties to the lower index."""
    neighbor_labels = []
    for i, query in enumerate(embeddings):
        scored = sorted(
            (-float(np.dot(query, item)), j)
            for j, item in enumerate(embeddings)
            if j != i
        )
        neighbor_labels.append([labels[j] for _, j in scored[:k]])
    return np.array(neighbor_labels)


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


@pytest.mark.parametrize("backend", ["exact", "scann"])
def test_singleton_class_is_always_a_miss(backend):
    embeddings = np.eye(3, dtype=np.float32)[[0, 0, 1]]
    # Class 7 has one image: nothing in the gallery can match it, even at K=2.
    recall = evaluate_retrieval(embeddings, [3, 3, 7], ks=(1, 2), backend=backend)
    assert recall == {"recall@1": 2 / 3, "recall@2": 2 / 3}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evaluate_retrieval_with_ties_matches_naive_loop(seed):
    rng = np.random.default_rng(seed)
    # 40 copies of 6 directions: dot products are exactly 0 or 1, ties everywhere.
    # Labels cut across directions; label 9 is a class of one image.
    embeddings = np.eye(6, dtype=np.float32)[rng.integers(0, 6, size=40)]
    labels = rng.integers(0, 5, size=40)
    labels[17] = 9
    ks = (1, 2, 4, 8)
    neighbor_labels = naive_leave_one_out_labels(embeddings, labels, 8)
    expected = naive_recall(neighbor_labels, labels, ks)
    assert evaluate_retrieval(embeddings, labels, ks, backend="exact") == expected


@pytest.mark.parametrize(
    "ks", [(), (0, 1), (1, 9), (1.0,)], ids=["empty", "zero", "too_large", "float"]
)
def test_bad_ks_are_rejected(ks):
    with pytest.raises(ConfigError, match=r"Received: ks="):
        recall_at_k(np.zeros((4, 8)), np.zeros(4), ks)


def test_label_count_mismatch_is_rejected():
    with pytest.raises(ValueError, match=r"Received: labels.shape=\(3,\)"):
        evaluate_retrieval(np.eye(4, dtype=np.float32), [0, 0, 1])
