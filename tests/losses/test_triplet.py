import numpy as np
import pytest
import tensorflow as tf

from dmml_tf.losses.triplet import TripletSemiHardLoss, triplet_semi_hard_loss


def reference_semi_hard(labels, embeddings, margin):
    """Loop over explicit (anchor, positive) pairs, mining the negative by hand."""
    n = len(labels)
    dist = np.sqrt(((embeddings[:, None] - embeddings[None]) ** 2).sum(-1))
    losses = []
    for a in range(n):
        negatives = [j for j in range(n) if labels[j] != labels[a]]
        if not negatives:
            continue
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            farther = [dist[a, j] for j in negatives if dist[a, j] > dist[a, p]]
            d_an = min(farther) if farther else max(dist[a, j] for j in negatives)
            losses.append(max(dist[a, p] - d_an + margin, 0.0))
    return float(np.mean(losses)) if losses else 0.0


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("margin", [0.2, 1.0], ids=["margin0.2", "margin1.0"])
def test_matches_loop_reference(seed, margin):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=12)
    embeddings = unit(rng.normal(size=(12, 5))).astype(np.float32)
    got = triplet_semi_hard_loss(labels, embeddings, margin).numpy()
    expected = reference_semi_hard(labels, embeddings, margin)
    assert expected > 0
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "labels", [[0, 1, 2, 3], [5, 5, 5, 5]], ids=["no_positive", "no_negative"]
)
def test_no_valid_triplet_gives_zero_loss_and_finite_gradient(labels):
    embeddings = tf.Variable(unit(np.random.default_rng(0).normal(size=(4, 3))).astype("float32"))
    with tf.GradientTape() as tape:
        loss = triplet_semi_hard_loss(tf.constant(labels), embeddings)
    grad = tape.gradient(loss, embeddings)
    assert loss.numpy() == 0.0
    assert np.all(np.isfinite(grad.numpy()))


def test_gradient_is_finite_with_duplicate_embeddings():
    embeddings = tf.Variable(np.array([[1, 0], [1, 0], [0, 1], [0, 1]], "float32"))
    with tf.GradientTape() as tape:
        loss = triplet_semi_hard_loss(tf.constant([0, 0, 1, 1]), embeddings)
    grad = tape.gradient(loss, embeddings)
    assert np.all(np.isfinite(grad.numpy()))


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    labels = tf.constant(rng.integers(0, 3, size=8))
    x = rng.normal(size=(8, 4))
    variable = tf.Variable(x)
    with tf.GradientTape() as tape:
        loss = triplet_semi_hard_loss(labels, variable, 0.5)
    grad = tape.gradient(loss, variable).numpy()
    eps = 1e-6
    for i, j in [(0, 0), (3, 2), (7, 1)]:
        plus, minus = x.copy(), x.copy()
        plus[i, j] += eps
        minus[i, j] -= eps
        numeric = (
            triplet_semi_hard_loss(labels, plus, 0.5) - triplet_semi_hard_loss(labels, minus, 0.5)
        ).numpy() / (2 * eps)
        np.testing.assert_allclose(grad[i, j], numeric, rtol=1e-4, atol=1e-7)


def test_keras_loss_wrapper_round_trips_config():
    loss = TripletSemiHardLoss(margin=0.3)
    restored = TripletSemiHardLoss.from_config(loss.get_config())
    assert restored.margin == 0.3
    labels = np.array([0, 0, 1, 1])
    embeddings = unit(np.random.default_rng(0).normal(size=(4, 3))).astype("float32")
    np.testing.assert_allclose(
        restored(labels, embeddings), triplet_semi_hard_loss(labels, embeddings, 0.3), rtol=1e-6
    )
