import keras
import numpy as np
import pytest
import tensorflow as tf
from retrieval_helpers import (clustered_embeddings, naive_average_precision,
                               naive_neighbors, naive_r_precision)

from dmml_tf.models.embedder import ensemble
from dmml_tf.retrieval import evaluate
from dmml_tf.retrieval.evaluate import (embed, embed_networks, results_table,
                                        retrieval_metrics)


def naive_metrics(embeddings, labels, ks, gallery=None):
    """Every metric from a plain loop over queries; queries without a same-class gallery
    image skipped. `gallery`: `(embeddings, labels)`, else leave-one-out."""
    own = gallery is None
    gallery_embeddings, gallery_labels = (embeddings, labels) if own else gallery
    neighbors = naive_neighbors(embeddings, gallery_embeddings, len(gallery_labels) - own, own)
    relevant = [sum(1 for j, other in enumerate(gallery_labels) if other == label and not (own and j == i))
                for i, label in enumerate(labels)]
    searched = min(len(gallery_labels) - own, max(max(ks), max(relevant)))
    per_query = {f"recall@{k}": [] for k in ks} | {"map@r": [], "r_precision": [], "mrr": [],
                                                   "knn_accuracy": []}
    for i, label in enumerate(labels):
        r = relevant[i]
        if r == 0:
            continue
        ranked = [gallery_labels[j] for j in neighbors[i]]
        for k in ks:
            per_query[f"recall@{k}"].append(float(label in ranked[:k]))
        per_query["map@r"].append(naive_average_precision(ranked, label, r))
        per_query["r_precision"].append(naive_r_precision(ranked, label, r))
        first = ranked.index(label)
        per_query["mrr"].append(1.0 / (first + 1) if first < searched else 0.0)
        voters = ranked[:max(ks)]
        most = max(voters.count(v) for v in voters)
        winner = next(v for v in voters if voters.count(v) == most)  # ties: the nearest
        per_query["knn_accuracy"].append(float(winner == label))
    return {name: float(np.mean(values)) for name, values in per_query.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_with_ties_and_singletons_match_naive_loop(seed, monkeypatch):
    monkeypatch.setattr(evaluate, "_BLOCK_NEIGHBORS", 40)  # several query blocks
    rng = np.random.default_rng(seed)
    # 40 copies of 6 directions: dot products are exactly 0 or 1, ties everywhere.
    # Labels cut across directions; labels 9 and 10 are classes of one image.
    embeddings = np.eye(6, dtype=np.float32)[rng.integers(0, 6, size=40)]
    labels = rng.integers(0, 5, size=40)
    labels[17], labels[23] = 9, 10
    ks = (1, 2, 4, 8)
    results = retrieval_metrics(embeddings, labels, ks, backend="exact")
    expected = naive_metrics(embeddings, labels, ks)
    assert set(results) == set(expected) | {"nmi"}
    for name, value in expected.items():
        assert results[name] == pytest.approx(value, abs=1e-12), name
    assert 0.0 <= results["nmi"] <= 1.0


@pytest.mark.parametrize("seed", [0, 1])
def test_separate_queries_and_gallery_match_naive_loop(seed, monkeypatch):
    monkeypatch.setattr(evaluate, "_BLOCK_NEIGHBORS", 40)
    rng = np.random.default_rng(seed)
    directions = np.eye(6, dtype=np.float32)
    queries, gallery = directions[rng.integers(0, 6, 25)], directions[rng.integers(0, 6, 30)]
    query_labels, gallery_labels = rng.integers(0, 5, 25), rng.integers(0, 4, 30)
    query_labels[3] = 9  # a class the gallery lacks: no query
    ks = (1, 2, 4)
    results = retrieval_metrics(queries, query_labels, ks, backend="exact",
                                gallery=(gallery, gallery_labels))
    expected = naive_metrics(queries, query_labels, ks, gallery=(gallery, gallery_labels))
    for name, value in expected.items():
        assert results[name] == pytest.approx(value, abs=1e-12), name


def test_singleton_queries_are_left_out():
    embeddings = np.eye(3, dtype=np.float32)[[0, 0, 1]]
    # Class 7 has one image: it is no query, so every query finds its class first.
    results = retrieval_metrics(embeddings, [3, 3, 7], ks=(1, 2), backend="exact")
    assert results["recall@1"] == results["map@r"] == results["r_precision"] == 1.0


def test_scann_reports_its_recall_against_exact():
    x, labels = clustered_embeddings(3000, 400, 32, noise=1.2, seed=0)
    exact = retrieval_metrics(x, labels, (1, 4), backend="exact")
    scann = retrieval_metrics(x, labels, (1, 4), backend="scann", exact_below=1000,
                              check_queries=300)
    assert "scann_recall@4" not in exact
    assert 0.99 <= scann.pop("scann_recall@4") <= 1.0
    for name, value in exact.items():
        assert scann[name] == pytest.approx(value, abs=2e-3), name
    # Perfectly separated clusters: NMI 1; these are noisy, so less, but far from 0.
    assert 0.5 < exact["nmi"] < 1.0


def test_no_class_with_two_images_is_an_error():
    with pytest.raises(ValueError, match="No query has a same-class image in the gallery"):
        retrieval_metrics(np.eye(3, dtype=np.float32), [0, 1, 2], ks=(1,))


@pytest.fixture(scope="module")
def members():
    keras.utils.set_random_seed(0)
    return [keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(4), keras.layers.UnitNormalization()],
                             name=f"member{m}") for m in range(2)]


def test_ensembles_from_parts_equal_the_ensemble_network(members):
    images = np.random.default_rng(0).uniform(0, 255, (10, 8, 8, 3)).astype(np.float32)
    networks = {"member0": members[0], "member1": members[1],
                "ensemble": ensemble(members)}
    embeddings = embed_networks(networks, images, 3, ensembles={"ensemble": ["member0",
                                                                              "member1"]})
    assert list(embeddings) == ["member0", "member1", "ensemble"]
    np.testing.assert_allclose(embeddings["ensemble"], embed(networks["ensemble"], images, 4),
                               atol=1e-6)


def test_embed_takes_arrays_and_datasets(members):
    images = np.random.default_rng(1).integers(0, 255, (7, 8, 8, 3), dtype=np.uint8)
    expected = members[0](images.astype(np.float32)).numpy()
    pairs = tf.data.Dataset.from_tensor_slices((images, np.zeros(7))).batch(3)
    np.testing.assert_allclose(embed(members[0], images, 2), expected, atol=1e-6)
    np.testing.assert_allclose(embed(members[0], pairs, 0), expected, atol=1e-6)
    np.testing.assert_allclose(embed(members[0], pairs.map(lambda x, y: x), 0), expected,
                               atol=1e-6)


def test_results_table_lines_up():
    table = results_table({"member0": {"recall@1": 0.5, "scann_recall@8": 1.0},
                           "shadow_ensemble": {"recall@1": 0.25, "scann_recall@8": 0.999}})
    assert table.splitlines() == [
        "network             recall@1  scann_recall@8",
        "member0               0.5000          1.0000",
        "shadow_ensemble       0.2500          0.9990",
    ]
