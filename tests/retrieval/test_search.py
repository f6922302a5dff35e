import numpy as np
import pytest

from dmml_tf.errors import ConfigError
from dmml_tf.retrieval import search
from dmml_tf.retrieval.metrics import recall_at_k
from dmml_tf.retrieval.search import drop_self, nearest_neighbors

BACKENDS = ["exact", "scann"]


def unit_rows(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def random_unit(num_vectors, dim, seed):
    return unit_rows(np.random.default_rng(seed).normal(size=(num_vectors, dim)))


def clustered_embeddings(num_vectors, num_classes, dim, noise, seed):
    """Unit vectors around one random unit centre per class, plus their labels."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.normal(size=(num_classes, dim)))
    labels = rng.integers(0, num_classes, num_vectors)
    offsets = noise * rng.normal(size=(num_vectors, dim)) / np.sqrt(dim)
    return unit_rows(centres[labels] + offsets), labels


def naive_neighbors(queries, gallery, k, leave_one_out):
    """Every score computed on its own; best first, ties to the lower index."""
    neighbors = []
    for i, query in enumerate(queries):
        scored = [
            (-float(np.dot(query, item)), j)
            for j, item in enumerate(gallery)
            if not (leave_one_out and j == i)
        ]
        neighbors.append([j for _, j in sorted(scored)[:k]])
    return np.array(neighbors)


def scores_of(queries, gallery, indices):
    return np.take_along_axis(queries @ gallery.T, indices, axis=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_leave_one_out_matches_naive_loop(backend):
    x = random_unit(60, 16, seed=0)
    expected = naive_neighbors(x, x, k=7, leave_one_out=True)
    np.testing.assert_array_equal(nearest_neighbors(x, 7, backend=backend), expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_separate_gallery_matches_naive_loop(backend):
    queries, gallery = random_unit(20, 16, seed=1), random_unit(50, 16, seed=2)
    gallery[:3] = queries[:3]  # A query found in the gallery is kept there.
    expected = naive_neighbors(queries, gallery, k=5, leave_one_out=False)
    result = nearest_neighbors(queries, 5, backend=backend, gallery=gallery)
    np.testing.assert_array_equal(result, expected)
    np.testing.assert_array_equal(result[:3, 0], [0, 1, 2])


def test_exact_blocks_cover_every_query(monkeypatch):
    # 7 queries per block: 9 blocks, the last one partial.
    monkeypatch.setattr(search, "_EXACT_BLOCK_SCORES", 7 * 60)
    x = random_unit(60, 16, seed=3)
    expected = naive_neighbors(x, x, k=4, leave_one_out=True)
    np.testing.assert_array_equal(nearest_neighbors(x, 4, backend="exact"), expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [3, 4], ids=["k_below_copies", "k_equals_copies"])
def test_self_is_excluded_among_exact_duplicates(backend, k):
    # 5 copies of each of 4 directions: every neighbour ties with the query itself.
    x = np.repeat(np.eye(4, dtype=np.float32), 5, axis=0)
    result = nearest_neighbors(x, k, backend=backend)
    rows = np.arange(len(x))[:, None]
    assert not (result == rows).any()
    np.testing.assert_array_equal(result // 5, np.broadcast_to(rows // 5, result.shape))
    assert all(len(set(row)) == k for row in result)


def test_drop_self_keeps_rank_order():
    indices = np.array([[0, 1, 2], [0, 1, 2], [3, 4, 1], [1, 3, 0]])
    expected = [[1, 2], [0, 2], [3, 4], [1, 0]]
    np.testing.assert_array_equal(drop_self(indices, 2), expected)


def test_scann_agrees_with_exact_on_a_test_split_sized_set():
    # As big as emoji_styles' test split: ~6 images per class, recall@1 near 0.55.
    x, labels = clustered_embeddings(5000, 800, 128, noise=1.8, seed=0)
    exact = nearest_neighbors(x, 8, backend="exact")
    approximate = nearest_neighbors(x, 8, backend="scann")

    exact_recall = recall_at_k(labels[exact], labels)
    assert recall_at_k(labels[approximate], labels) == exact_recall
    assert 0.4 < exact_recall["recall@1"] < 0.7
    # Indices may differ only where two neighbours have the same score.
    exact_scores = scores_of(x, x, exact)
    approximate_scores = scores_of(x, x, approximate)
    np.testing.assert_allclose(approximate_scores, exact_scores, atol=1e-5)
    swapped = approximate != exact
    assert swapped.mean() < 1e-3
    np.testing.assert_allclose(
        approximate_scores[swapped], exact_scores[swapped], atol=1e-6
    )


def test_unknown_backend_is_rejected():
    with pytest.raises(ConfigError, match="Received: backend=faiss$"):
        nearest_neighbors(random_unit(10, 4, seed=0), 2, backend="faiss")


@pytest.mark.parametrize("k", [0, 10], ids=["zero", "whole_set"])
def test_k_out_of_range_is_rejected(k):
    # Leave-one-out on 10 vectors leaves 9 to retrieve.
    with pytest.raises(ConfigError, match=f"between 1 and 9, .* Received: k={k}$"):
        nearest_neighbors(random_unit(10, 4, seed=0), k, backend="exact")


def test_dimension_mismatch_is_rejected():
    with pytest.raises(ValueError, match="Received: embeddings.shape"):
        nearest_neighbors(
            random_unit(10, 4, seed=0), 2, gallery=random_unit(10, 8, seed=1)
        )
