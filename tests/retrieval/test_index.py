import numpy as np
import pytest
from retrieval_helpers import clustered_embeddings, naive_neighbors, random_unit

from dmml_tf.errors import ConfigError, DataError
from dmml_tf.retrieval.index import GalleryIndex, nearest_neighbors
from dmml_tf.retrieval.metrics import recall_at_k

BACKENDS = ["exact", "scann"]


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
    indices, scores = GalleryIndex(gallery, backend=backend).search(queries, 5)
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_array_equal(indices[:3, 0], [0, 1, 2])
    np.testing.assert_allclose(scores, scores_of(queries, gallery, indices), atol=1e-5)


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


def test_scann_tree_agrees_with_exact_on_a_test_split_sized_set():
    # As big as emoji_styles' test split (~6 images per class, recall@1 near 0.55), with
    # the threshold lowered so that ScaNN uses its tree and hashing.
    x, labels = clustered_embeddings(5000, 800, 128, noise=1.8, seed=0)
    index = GalleryIndex(x, backend="scann", exact_below=2000)
    assert index.settings["mode"] == "tree" and not index.is_exact
    exact = nearest_neighbors(x, 8, backend="exact")
    approximate = nearest_neighbors(x, 8, backend="scann", exact_below=2000)

    exact_recall = recall_at_k(labels[exact], labels)
    assert recall_at_k(labels[approximate], labels) == exact_recall
    assert 0.4 < exact_recall["recall@1"] < 0.7
    # Indices may differ only where two neighbours have the same score.
    exact_scores, approximate_scores = scores_of(x, x, exact), scores_of(x, x, approximate)
    np.testing.assert_allclose(approximate_scores, exact_scores, atol=1e-5)
    swapped = approximate != exact
    assert swapped.mean() < 1e-3
    recall = index.recall_against_exact(x, 8, query_ids=np.arange(5000), max_queries=500)
    assert 0.999 <= recall <= 1.0


def test_recall_against_exact_counts_missed_neighbours():
    x = random_unit(3000, 32, seed=5)
    # One leaf of ~55 searched and no rescoring worth the name: many true neighbours
    # are missed, and the measure must say so.
    index = GalleryIndex(x, backend="scann", exact_below=100)
    index.settings.update(num_leaves_to_search=1, reorder=10)
    recall = index.recall_against_exact(x, 10, query_ids=np.arange(3000), max_queries=200)
    assert recall < 0.5
    assert GalleryIndex(x, backend="scann").recall_against_exact(x, 10) == 1.0


@pytest.mark.parametrize("backend, exact_below", [("exact", 20_000), ("scann", 20_000),
                                                  ("scann", 1000)],
                         ids=["exact", "scann_brute_force", "scann_tree"])
def test_save_and_load_give_the_same_results(tmp_path, backend, exact_below):
    x, labels = clustered_embeddings(3000, 300, 32, noise=1.0, seed=1)
    thumbnails = np.random.default_rng(0).integers(0, 255, (3000, 4, 4, 3), dtype=np.uint8)
    references = [f"emoji_styles:test/{i}" for i in range(3000)]
    index = GalleryIndex(x, labels, references, thumbnails, class_names=["a", "b"],
                         backend=backend, exact_below=exact_below)
    index.save(tmp_path / "gallery", metadata={"network": "ensemble"})
    loaded, metadata = GalleryIndex.load(tmp_path / "gallery")

    assert metadata == {"network": "ensemble"}
    assert loaded.settings == index.settings and loaded.references == references
    assert loaded.class_names == ["a", "b"]
    np.testing.assert_array_equal(loaded.labels, labels)
    np.testing.assert_array_equal(loaded.thumbnails, thumbnails)
    for result, expected in zip(loaded.search(x[:50], 5), index.search(x[:50], 5)):
        np.testing.assert_array_equal(result, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery"]


def test_loading_a_missing_index_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="python main.py export"):
        GalleryIndex.load(tmp_path)


def test_unknown_backend_is_rejected():
    with pytest.raises(ConfigError, match="Received: backend=faiss$"):
        nearest_neighbors(random_unit(10, 4, seed=0), 2, backend="faiss")


@pytest.mark.parametrize("k", [0, 10], ids=["zero", "whole_set"])
def test_k_out_of_range_is_rejected(k):
    # Leave-one-out on 10 vectors leaves 9 to retrieve.
    with pytest.raises(ConfigError, match=f"between 1 and 9, .* Received: k={k}$"):
        nearest_neighbors(random_unit(10, 4, seed=0), k, backend="exact")


def test_dimension_mismatch_is_rejected():
    with pytest.raises(ValueError, match="Received: queries.shape"):
        nearest_neighbors(random_unit(10, 4, seed=0), 2, gallery=random_unit(10, 8, seed=1))


def test_label_count_mismatch_is_rejected():
    with pytest.raises(ValueError, match=r"Received: len\(labels\)=3"):
        GalleryIndex(random_unit(4, 2, seed=0), labels=[0, 0, 1])
