import numpy as np
import pytest
from retrieval_helpers import naive_neighbors, random_unit

from dmml_tf.retrieval import search
from dmml_tf.retrieval.search import drop_self, exact_neighbors, scann_settings


def test_exact_neighbors_match_naive_loop_with_scores():
    queries, gallery = random_unit(20, 16, seed=1), random_unit(50, 16, seed=2)
    indices, scores = exact_neighbors(queries, gallery, 5)
    np.testing.assert_array_equal(indices, naive_neighbors(queries, gallery, 5, False))
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ gallery.T, indices, 1),
                               atol=1e-6)


def test_exact_blocks_cover_every_query_and_skip_their_own_rows(monkeypatch):
    # Blocks of 8 queries (the last one partial) x chunks of 7 gallery rows (k = 4).
    monkeypatch.setattr(search, "_EXACT_MIN_QUERIES", 8)
    monkeypatch.setattr(search, "_EXACT_BLOCK_SCORES", 8 * 7)
    x = random_unit(60, 16, seed=3)
    indices, _ = exact_neighbors(x, x, 4, query_ids=np.arange(60))
    np.testing.assert_array_equal(indices, naive_neighbors(x, x, 4, leave_one_out=True))


def test_chunks_smaller_than_k_and_ties_across_chunks(monkeypatch):
    monkeypatch.setattr(search, "_EXACT_BLOCK_SCORES", 5 * 3)  # chunks of k = 6 rows
    # 4 directions, 5 copies each: every chunk holds ties of the query's best score.
    x = np.repeat(np.eye(4, dtype=np.float32), 5, axis=0)[np.random.default_rng(0).permutation(20)]
    indices, _ = exact_neighbors(x[:5], x, 6, query_ids=np.arange(5))
    np.testing.assert_array_equal(indices, naive_neighbors(x[:5], x, 6, leave_one_out=True))


def test_query_ids_may_be_any_gallery_rows():
    x = random_unit(30, 8, seed=4)
    ids = np.array([29, 3, 17])
    indices, _ = exact_neighbors(x[ids], x, 29, query_ids=ids)
    assert not (indices == ids[:, None]).any()
    assert all(sorted(row) == sorted(set(range(30)) - {i}) for row, i in zip(indices, ids))


def test_drop_self_keeps_rank_order():
    indices = np.array([[0, 1, 2], [0, 1, 2], [3, 4, 1], [1, 3, 0]])
    scores = -np.arange(12.0).reshape(4, 3)
    kept, kept_scores = drop_self(indices, scores, 2, np.arange(4))
    np.testing.assert_array_equal(kept, [[1, 2], [0, 2], [3, 4], [1, 0]])
    np.testing.assert_array_equal(kept_scores, [[-1, -2], [-3, -5], [-6, -7], [-9, -11]])


@pytest.mark.parametrize(
    "size, expected",
    [
        (19_999, {"mode": "brute_force"}),
        # 2 sqrt(40,000) = 400 leaves of 100: 200 leaves score 20,000 vectors.
        (40_000, {"mode": "tree", "num_leaves": 400, "num_leaves_to_search": 200,
                  "training_sample_size": 40_000, "reorder": 1000}),
        # 2,000 leaves of 500: 5% of the leaves (100) already score 50,000.
        (1_000_000, {"mode": "tree", "num_leaves": 2000, "num_leaves_to_search": 100,
                     "training_sample_size": 250_000, "reorder": 1000}),
    ],
    ids=["small", "medium", "large"],
)
def test_scann_settings_follow_gallery_size(size, expected):
    assert scann_settings(size, exact_below=20_000) == expected
