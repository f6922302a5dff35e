import numpy as np
import pytest
import tensorflow as tf

from dmml_tf.losses.distances import pairwise_distances
from dmml_tf.losses.mining import (distance_weights, mine_batch_hard, mine_distance_weighted,
                                   mine_semi_hard)


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def reference_weights(distances, labels, dim, cutoff=0.5, nonzero_loss_cutoff=1.4):
    """Row by row, in float64: 1 / q(d) over the negatives closer than the cut-off,
    scaled so the row's largest weight is 1; uniform over negatives when none is."""
    n = len(labels)
    weights = np.zeros((n, n))
    for a in range(n):
        log_w = {}
        for j in range(n):
            d = min(max(distances[a, j], cutoff), 1.999)
            if labels[j] != labels[a] and d < nonzero_loss_cutoff:
                log_w[j] = -((dim - 2) * np.log(d) + (dim - 3) / 2 * np.log(1 - d * d / 4))
        if log_w:
            top = max(log_w.values())
            for j, value in log_w.items():
                weights[a, j] = np.exp(value - top)
        else:
            weights[a] = [float(labels[j] != labels[a]) for j in range(n)]
    return weights


def reference_sample(weights_row, u):
    """The first column whose running sum of weights exceeds u times the total."""
    target, running = u * weights_row.sum(), 0.0
    for j, w in enumerate(weights_row):
        running += w
        if running > target:
            return j
    raise AssertionError("no column reached the target")


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 3)
    embeddings = unit(rng.normal(size=(12, 6))).astype("float32")
    return labels, embeddings, pairwise_distances(embeddings).numpy()


def test_batch_hard_marks_each_anchors_farthest_positive_against_closest_negative(batch):
    labels, _, distances = batch
    negative_distances, pair_mask = (t.numpy() for t in mine_batch_hard(distances, labels))
    for a in range(len(labels)):
        positives = [p for p in range(len(labels)) if labels[p] == labels[a] and p != a]
        hardest = max(positives, key=lambda p: distances[a, p])
        assert list(np.flatnonzero(pair_mask[a])) == [hardest]
        closest = min(distances[a, j] for j in range(len(labels)) if labels[j] != labels[a])
        np.testing.assert_allclose(negative_distances[a, hardest], closest, rtol=1e-6)


def test_semi_hard_negative_is_farther_than_positive_when_one_exists(batch):
    labels, _, distances = batch
    negative_distances, pair_mask = (t.numpy() for t in mine_semi_hard(distances, labels))
    for a, p in zip(*np.nonzero(pair_mask)):
        farther = [distances[a, j] for j in range(len(labels))
                   if labels[j] != labels[a] and distances[a, j] > distances[a, p]]
        if farther:
            np.testing.assert_allclose(negative_distances[a, p], min(farther), rtol=1e-6)


@pytest.mark.parametrize("dim", [6, 64], ids=["dim6", "dim64"])
def test_distance_weights_match_loop_reference(batch, dim):
    labels, _, distances = batch
    got = distance_weights(distances, labels, dim).numpy()
    np.testing.assert_allclose(got, reference_weights(distances, labels, dim), rtol=1e-4,
                               atol=1e-6)


def test_distance_weights_fall_back_to_uniform_when_all_negatives_are_far():
    labels = np.array([0, 0, 1, 1])
    distances = np.array([[0, .1, 1.9, 1.8], [.1, 0, 1.7, 1.6], [1.9, 1.7, 0, .2],
                          [1.8, 1.6, .2, 0]], "float32")
    got = distance_weights(distances, labels, 8).numpy()
    np.testing.assert_array_equal(got, (labels[:, None] != labels[None]).astype("float32"))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_distance_weighted_samples_match_loop_reference(batch, seed):
    labels, _, distances = batch
    uniform = np.random.default_rng(seed).uniform(size=distances.shape).astype("float32")
    negative_distances, pair_mask = (
        t.numpy() for t in mine_distance_weighted(distances, labels, 6, uniform))
    weights = reference_weights(distances, labels, 6)
    for a, p in zip(*np.nonzero(pair_mask)):
        negative = reference_sample(weights[a], uniform[a, p])
        assert labels[negative] != labels[a]
        assert negative_distances[a, p] == distances[a, negative]


def test_distance_weighted_sampling_frequencies_follow_the_weights(batch):
    labels, _, distances = batch
    sample = tf.function(lambda u: mine_distance_weighted(distances, labels, 6, u)[0])
    rng = np.random.default_rng(0)
    counts = np.zeros(len(labels))
    draws = 3000
    for _ in range(draws // len(labels)):
        chosen = sample(rng.uniform(size=distances.shape).astype("float32")).numpy()[0]
        for d in chosen[labels == labels[0]][1:]:  # anchor 0's pairs
            counts[np.flatnonzero(distances[0] == d)[0]] += 1
    weights = reference_weights(distances, labels, 6)[0]
    expected = weights / weights.sum()
    observed = counts / counts.sum()
    assert np.abs(observed - expected).max() < 0.05
