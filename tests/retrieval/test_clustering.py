import numpy as np
import pytest

from dmml_tf.retrieval import clustering
from dmml_tf.retrieval.clustering import assign, kmeans, kmeans_plus_plus, lloyd
from dmml_tf.retrieval.metrics import normalized_mutual_information


def naive_assign(points, centroids):
    """Nearest centroid by a loop over squared distances; ties to the lower index."""
    return np.array([min(range(len(centroids)),
                         key=lambda c: (float(np.sum((p - centroids[c]) ** 2)), c))
                     for p in points])


def naive_lloyd(points, centroids, iterations):
    centroids = centroids.astype(np.float64)
    clusters = naive_assign(points, centroids)
    for _ in range(iterations):
        for c in range(len(centroids)):
            if (clusters == c).any():
                centroids[c] = points[clusters == c].mean(axis=0)
        clusters = naive_assign(points, centroids)
    return clusters


def test_assign_matches_naive_loop_across_blocks(monkeypatch):
    monkeypatch.setattr(clustering, "_BLOCK_DISTANCES", 5 * 7)  # 5 points per block
    rng = np.random.default_rng(0)
    points = rng.normal(size=(23, 4)).astype(np.float32)
    centroids = rng.normal(size=(7, 4)).astype(np.float32)
    np.testing.assert_array_equal(assign(points, centroids), naive_assign(points, centroids))


@pytest.mark.parametrize("iterations", [1, 3])
def test_lloyd_matches_naive_loop(iterations):
    rng = np.random.default_rng(1)
    points = rng.normal(size=(50, 3)).astype(np.float32)
    start = points[rng.choice(50, 4, replace=False)]
    np.testing.assert_array_equal(lloyd(points, start.copy(), iterations),
                                  naive_lloyd(points, start, iterations))


def naive_kmeans_plus_plus(points, num_clusters, rng):
    """k-means++ by its definition: squared distances to the nearest chosen point."""
    chosen = [int(rng.integers(len(points)))]
    for _ in range(1, num_clusters):
        nearest = np.array([min(float(np.sum((p - points[c]) ** 2)) for c in chosen)
                            for p in points])
        chosen.append(int(rng.choice(len(points), p=nearest / nearest.sum())))
    return points[chosen]


def test_kmeans_plus_plus_matches_naive_loop():
    points = np.random.default_rng(3).normal(size=(40, 5)).astype(np.float32)
    np.testing.assert_array_equal(kmeans_plus_plus(points, 8, np.random.default_rng(5)),
                                  naive_kmeans_plus_plus(points, 8, np.random.default_rng(5)))


def test_kmeans_plus_plus_picks_distinct_points():
    points = np.random.default_rng(0).normal(size=(30, 2)).astype(np.float32)
    centroids = kmeans_plus_plus(points, 30, np.random.default_rng(0))
    assert len(np.unique(centroids, axis=0)) == 30
    assert all((points == c).all(axis=1).any() for c in centroids)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_recovers_separated_clusters(seed):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(6), 20)
    points = 10 * np.eye(6, 8)[labels] + rng.normal(scale=0.1, size=(120, 8))
    clusters = kmeans(points, 6, seed=seed)
    assert normalized_mutual_information(labels, clusters) == pytest.approx(1.0)


def test_bad_cluster_count_is_rejected():
    with pytest.raises(ValueError, match="Received: num_clusters=5"):
        kmeans(np.zeros((4, 2)), 5)
