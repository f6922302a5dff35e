import numpy as np
import pytest
import tensorflow as tf

from dmml_tf.losses.triplet import MINERS, TripletLoss, triplet_loss
from tests.losses.finite_differences import assert_gradient_matches_finite_differences
from tests.losses.test_mining import reference_sample, reference_weights

MININGS = list(MINERS)


def reference_triplets(labels, dist, mining, uniform):
    """Explicit (anchor, positive, negative) triplets, mined by hand."""
    n = len(labels)
    triplets = []
    weights = reference_weights(dist, labels, dim=5)
    for a in range(n):
        negatives = [j for j in range(n) if labels[j] != labels[a]]
        positives = [p for p in range(n) if p != a and labels[p] == labels[a]]
        if not negatives or not positives:
            continue
        if mining == "batch_hard":
            hardest = max(positives, key=lambda p: dist[a, p])
            triplets.append((a, hardest, min(negatives, key=lambda j: dist[a, j])))
            continue
        for p in positives:
            if mining == "distance_weighted":
                triplets.append((a, p, reference_sample(weights[a], uniform[a, p])))
                continue
            # semi-hard: the closest negative farther than p, else the farthest negative
            farther = [j for j in negatives if dist[a, j] > dist[a, p]]
            pick = min if farther else max
            triplets.append((a, p, pick(farther or negatives, key=lambda j: dist[a, j])))
    return triplets


def reference_triplet_loss(labels, embeddings, margin, mining, seed=(0, 0), reduction="all"):
    dist = np.sqrt(((embeddings[:, None] - embeddings[None]) ** 2).sum(-1))
    uniform = tf.random.stateless_uniform(dist.shape, seed).numpy()
    losses = [max(dist[a, p] - dist[a, n] + margin, 0.0)
              for a, p, n in reference_triplets(labels, dist, mining, uniform)]
    if reduction == "nonzero":
        losses = [loss for loss in losses if loss > 0]
    return float(np.mean(losses)) if losses else 0.0


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("mining", MININGS)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("margin", [0.2, 1.0], ids=["margin0.2", "margin1.0"])
def test_matches_loop_reference(mining, seed, margin):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=12)
    embeddings = unit(rng.normal(size=(12, 5))).astype(np.float32)
    got = triplet_loss(labels, embeddings, margin, mining, seed=(seed, 7)).numpy()
    expected = reference_triplet_loss(labels, embeddings, margin, mining, seed=(seed, 7))
    assert expected > 0
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mining", MININGS)
@pytest.mark.parametrize("seed", [0, 1])
def test_nonzero_reduction_matches_loop_reference(mining, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=12)
    embeddings = unit(rng.normal(size=(12, 5))).astype(np.float32)
    got = triplet_loss(labels, embeddings, 0.2, mining, (seed, 7), reduction="nonzero").numpy()
    expected = reference_triplet_loss(labels, embeddings, 0.2, mining, (seed, 7), "nonzero")
    everything = reference_triplet_loss(labels, embeddings, 0.2, mining, (seed, 7))
    if mining != "batch_hard":  # some mined pairs are already solved: the means differ
        assert expected > everything
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_nonzero_reduction_of_solved_pairs_is_zero_with_finite_gradient():
    embeddings = tf.Variable(np.array([[1, 0], [1, 0], [0, 1], [0, 1]], "float32"))
    with tf.GradientTape() as tape:
        loss = triplet_loss(tf.constant([0, 0, 1, 1]), embeddings, reduction="nonzero")
    assert loss.numpy() == 0.0
    assert np.all(np.isfinite(tape.gradient(loss, embeddings).numpy()))


def test_minings_differ():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 4)
    embeddings = unit(rng.normal(size=(16, 5))).astype(np.float32)
    losses = {m: float(triplet_loss(labels, embeddings, 0.2, m)) for m in MININGS}
    assert len(set(losses.values())) == len(MININGS), losses


def test_distance_weighted_seed_changes_the_sample():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 4)
    embeddings = unit(rng.normal(size=(16, 5))).astype(np.float32)
    draws = {float(triplet_loss(labels, embeddings, 0.2, "distance_weighted", (s, 0)))
             for s in range(4)}
    assert len(draws) > 1
    same = triplet_loss(labels, embeddings, 0.2, "distance_weighted", (3, 0))
    assert float(same) in draws


@pytest.mark.parametrize("mining", MININGS)
@pytest.mark.parametrize(
    "labels", [[0, 1, 2, 3], [5, 5, 5, 5]], ids=["no_positive", "no_negative"]
)
def test_no_valid_triplet_gives_zero_loss_and_finite_gradient(labels, mining):
    embeddings = tf.Variable(unit(np.random.default_rng(0).normal(size=(4, 3))).astype("float32"))
    with tf.GradientTape() as tape:
        loss = triplet_loss(tf.constant(labels), embeddings, mining=mining)
    grad = tape.gradient(loss, embeddings)
    assert loss.numpy() == 0.0
    assert np.all(np.isfinite(grad.numpy()))


@pytest.mark.parametrize("mining", MININGS)
def test_gradient_is_finite_with_duplicate_embeddings(mining):
    embeddings = tf.Variable(np.array([[1, 0], [1, 0], [0, 1], [0, 1]], "float32"))
    with tf.GradientTape() as tape:
        loss = triplet_loss(tf.constant([0, 0, 1, 1]), embeddings, mining=mining)
    grad = tape.gradient(loss, embeddings)
    assert np.all(np.isfinite(grad.numpy()))


@pytest.mark.parametrize("mining", ["semi_hard", "batch_hard"])
def test_gradient_matches_finite_differences(mining):
    rng = np.random.default_rng(3)
    labels = tf.constant(rng.integers(0, 3, size=8))
    assert_gradient_matches_finite_differences(
        lambda x: triplet_loss(labels, x, 0.5, mining), rng.normal(size=(8, 4)),
        [(0, 0), (3, 2), (7, 1)], atol=1e-7)


def test_keras_loss_wrapper_round_trips_config():
    loss = TripletLoss(margin=0.3, mining="batch_hard", reduction="nonzero")
    restored = TripletLoss.from_config(loss.get_config())
    assert (restored.margin, restored.mining, restored.triplet_reduction) == (0.3, "batch_hard", "nonzero")
    labels = np.array([0, 0, 1, 1])
    embeddings = unit(np.random.default_rng(0).normal(size=(4, 3))).astype("float32")
    np.testing.assert_allclose(
        restored(labels, embeddings),
        triplet_loss(labels, embeddings, 0.3, "batch_hard", reduction="nonzero"), rtol=1e-6
    )


def test_unknown_mining_is_rejected():
    with pytest.raises(ValueError, match="Received: mining='hardest'"):
        TripletLoss(mining="hardest")
