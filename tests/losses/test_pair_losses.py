import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from dmml_tf.losses.pair_losses import (CircleLoss, ContrastiveLoss, MultiSimilarityLoss,
                                        SupConLoss, circle_loss, contrastive_loss,
                                        mine_multi_similarity, multi_similarity_loss,
                                        supcon_loss)
from dmml_tf.losses.similarities import valid_pairs
from tests.losses.finite_differences import assert_gradient_matches_finite_differences

# The references below follow each paper's equation with explicit loops over anchors and
# pairs, on the project's conventions: rows L2-normalised, only anchors with a positive
# and a negative give terms, `reduction` averages over all terms or the nonzero ones.


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def cosine(z, i, j):
    return float(z[i] @ z[j] / (np.linalg.norm(z[i]) * np.linalg.norm(z[j])))


def anchor_pairs(labels):
    """[(a, positives, negatives)] for the anchors that have both."""
    found = []
    for a in range(len(labels)):
        positives = [p for p in range(len(labels)) if p != a and labels[p] == labels[a]]
        negatives = [n for n in range(len(labels)) if labels[n] != labels[a]]
        if positives and negatives:
            found.append((a, positives, negatives))
    return found


def reduce(terms, reduction):
    kept = [t for t in terms if t > 0] if reduction == "nonzero" else terms
    return sum(kept) / len(kept) if kept else 0.0


def reference_contrastive(labels, z, pos_margin, neg_margin, reduction):
    z = unit(z)
    positive_terms, negative_terms = [], []
    for a, positives, negatives in anchor_pairs(labels):
        positive_terms += [max(np.linalg.norm(z[a] - z[p]) - pos_margin, 0.0) for p in positives]
        negative_terms += [max(neg_margin - np.linalg.norm(z[a] - z[n]), 0.0) for n in negatives]
    return reduce(positive_terms, reduction) + reduce(negative_terms, reduction)


def reference_mined(labels, z, a, positives, negatives, epsilon):
    """Wang et al.'s mining: positives below the hardest negative + epsilon, negatives
    above the hardest positive - epsilon."""
    hardest_negative = max(cosine(z, a, n) for n in negatives)
    hardest_positive = min(cosine(z, a, p) for p in positives)
    return ([p for p in positives if cosine(z, a, p) - epsilon < hardest_negative],
            [n for n in negatives if cosine(z, a, n) + epsilon > hardest_positive])


def reference_multi_similarity(labels, z, alpha, beta, base, epsilon, reduction):
    terms = []
    for a, positives, negatives in anchor_pairs(labels):
        mined_positives, mined_negatives = reference_mined(labels, z, a, positives, negatives,
                                                           epsilon)
        positive = math.log(1 + sum(math.exp(-alpha * (cosine(z, a, p) - base))
                                    for p in mined_positives)) / alpha
        negative = math.log(1 + sum(math.exp(beta * (cosine(z, a, n) - base))
                                    for n in mined_negatives)) / beta
        terms.append(positive + negative)
    return reduce(terms, reduction)


def reference_circle(labels, z, margin, gamma, reduction, weights_from=None):
    """Sun et al.'s eq. (4) over every (negative, positive) pair of each anchor; the
    weights a_p, a_n are taken from `weights_from` (default `z`): the loss holds them
    constant, so gradients are checked with them frozen."""
    weights_from = z if weights_from is None else weights_from
    terms = []
    for a, positives, negatives in anchor_pairs(labels):
        total = 0.0
        for n in negatives:
            for p in positives:
                a_n = max(cosine(weights_from, a, n) + margin, 0.0)
                a_p = max(1 + margin - cosine(weights_from, a, p), 0.0)
                total += math.exp(gamma * (a_n * (cosine(z, a, n) - margin)
                                           - a_p * (cosine(z, a, p) - (1 - margin))))
        terms.append(math.log(1 + total))
    return reduce(terms, reduction)


def reference_supcon(labels, z, temperature, reduction):
    terms = []
    for a, positives, _ in anchor_pairs(labels):
        denominator = sum(math.exp(cosine(z, a, k) / temperature)
                          for k in range(len(labels)) if k != a)
        terms.append(-sum(math.log(math.exp(cosine(z, a, p) / temperature) / denominator)
                          for p in positives) / len(positives))
    return reduce(terms, reduction)


# case -> (loss, its loop reference, options); both take (labels, z, reduction=, **options).
CASES = {
    "contrastive": (contrastive_loss, reference_contrastive,
                    {"pos_margin": 0.0, "neg_margin": 1.0}),
    "contrastive_margins": (contrastive_loss, reference_contrastive,
                            {"pos_margin": 0.6, "neg_margin": 1.2}),
    "multi_similarity": (multi_similarity_loss, reference_multi_similarity,
                         {"alpha": 2.0, "beta": 50.0, "base": 0.5, "epsilon": 0.1}),
    "multi_similarity_paper_base": (multi_similarity_loss, reference_multi_similarity,
                                    {"alpha": 2.0, "beta": 50.0, "base": 1.0, "epsilon": 0.3}),
    "circle": (circle_loss, reference_circle, {"margin": 0.4, "gamma": 80.0}),
    "circle_small_gamma": (circle_loss, reference_circle, {"margin": 0.25, "gamma": 20.0}),
    "supcon": (supcon_loss, reference_supcon, {"temperature": 0.1}),
}
FUNCTIONS = {"contrastive": contrastive_loss, "multi_similarity": multi_similarity_loss,
             "circle": circle_loss, "supcon": supcon_loss}
WRAPPERS = {"contrastive": ContrastiveLoss, "multi_similarity": MultiSimilarityLoss,
            "circle": CircleLoss, "supcon": SupConLoss}


def batch(seed, n=12, classes=4, dim=5):
    """Labels with several classes (one singleton class: an anchor without positives) and
    random unit embeddings, float64."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([rng.integers(0, classes, size=n - 1), [classes]])
    return labels, unit(rng.normal(size=(n, dim)))


@pytest.mark.parametrize("reduction", ["all", "nonzero"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_loop_reference(case, seed, reduction):
    loss, reference, options = CASES[case]
    labels, z = batch(seed)
    expected = reference(labels, z, reduction=reduction, **options)
    assert expected > 0
    np.testing.assert_allclose(loss(labels, z, reduction=reduction, **options).numpy(), expected,
                               rtol=1e-9)


def test_nonzero_reduction_differs_where_terms_vanish():
    """With margins that zero some terms, `nonzero` averages over fewer terms."""
    labels, z = batch(0)
    options = CASES["contrastive_margins"][2]
    averaged = {reduction: float(contrastive_loss(labels, z, reduction=reduction, **options))
                for reduction in ("all", "nonzero")}
    assert averaged["nonzero"] > averaged["all"] > 0


@pytest.mark.parametrize("case", [case for case in CASES if not case.startswith("circle")])
def test_gradient_matches_finite_differences(case):
    loss, _, options = CASES[case]
    labels, z = batch(3, n=8, classes=3, dim=4)
    assert_gradient_matches_finite_differences(
        lambda x: loss(tf.constant(labels), x, reduction="all", **options), z,
        [(0, 0), (3, 2), (6, 1), (7, 3)])


@pytest.mark.parametrize("gamma", [80.0, 20.0])
def test_circle_gradient_matches_finite_differences_with_frozen_weights(gamma):
    """The loss holds a_p and a_n constant: its gradient is the reference's with them frozen."""
    labels, z = batch(3, n=8, classes=3, dim=4)
    variable = tf.Variable(z)
    with tf.GradientTape() as tape:
        value = circle_loss(labels, variable, gamma=gamma, reduction="all")
    grad = tape.gradient(value, variable).numpy()
    eps = 1e-6
    for i, j in [(0, 0), (3, 2), (6, 1), (7, 3)]:
        plus, minus = z.copy(), z.copy()
        plus[i, j] += eps
        minus[i, j] -= eps
        numeric = (reference_circle(labels, plus, 0.4, gamma, "all", weights_from=z)
                   - reference_circle(labels, minus, 0.4, gamma, "all", weights_from=z))
        numeric /= 2 * eps
        # The loss is O(100) at gamma = 80: finite differences carry ~1e-8 of rounding.
        np.testing.assert_allclose(grad[i, j], numeric, rtol=1e-4, atol=1e-6)


def value_and_gradient(function, labels, z, **options):
    variable = tf.Variable(z)
    with tf.GradientTape() as tape:
        value = function(tf.constant(labels), variable, **options)
    return value.numpy(), tape.gradient(value, variable).numpy()


@pytest.mark.parametrize("reduction", ["all", "nonzero"])
@pytest.mark.parametrize("labels", [[0, 1, 2, 3], [5, 5, 5, 5]],
                         ids=["no_positive", "one_class"])
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_no_valid_pair_gives_zero_loss_and_zero_gradient(name, labels, reduction):
    z = unit(np.random.default_rng(0).normal(size=(4, 3))).astype("float32")
    value, grad = value_and_gradient(FUNCTIONS[name], labels, z, reduction=reduction)
    assert value == 0.0
    np.testing.assert_array_equal(grad, 0.0)


def test_multi_similarity_without_mined_pairs_gives_zero():
    """Tight, far-apart classes: no positive is below a negative, so nothing is mined."""
    labels = np.array([0, 0, 1, 1])
    z = unit(np.array([[1.0, 0.0, 0.0], [1.0, 0.05, 0.0], [-1.0, 0.0, 0.0], [-1.0, 0.0, 0.05]]))
    positives, negatives = valid_pairs(labels)
    mined = mine_multi_similarity(tf.constant(z @ z.T), positives, negatives, 0.1)
    assert not np.any(mined[0].numpy()) and not np.any(mined[1].numpy())
    value, grad = value_and_gradient(multi_similarity_loss, labels, z)
    assert value == 0.0 and np.all(np.isfinite(grad))
    assert float(multi_similarity_loss(labels, z, reduction="nonzero")) == 0.0


def test_multi_similarity_mining_keeps_the_hard_pairs():
    # Anchor 0: positives at similarity 0.9 and 0.2, negatives at 0.25 and -0.5.
    similarities = tf.constant([[1.0, 0.9, 0.2, 0.25, -0.5]])
    positives = tf.constant([[False, True, True, False, False]])
    negatives = tf.constant([[False, False, False, True, True]])
    mined_positives, mined_negatives = mine_multi_similarity(similarities, positives, negatives,
                                                             0.1)
    # 0.2 - 0.1 < 0.25 (the hardest negative), 0.9 - 0.1 is not; 0.25 + 0.1 > 0.2 (the
    # hardest positive), -0.5 + 0.1 is not.
    np.testing.assert_array_equal(mined_positives.numpy(), [[False, False, True, False, False]])
    np.testing.assert_array_equal(mined_negatives.numpy(), [[False, False, False, True, False]])


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_duplicate_rows_give_finite_values_and_gradients(name):
    # The sampler repeats images of small classes: identical rows, in float32.
    labels = [0, 0, 0, 1, 1, 2]
    z = unit(np.array([[1, 0, 0], [1, 0, 0], [0.6, 0.8, 0], [0, 1, 0], [0, 1, 0], [0, 0.6, 0.8]],
                      "float32"))
    for reduction in ("all", "nonzero"):
        value, grad = value_and_gradient(FUNCTIONS[name], labels, z, reduction=reduction)
        assert np.isfinite(value) and np.all(np.isfinite(grad))


@pytest.mark.parametrize("name, options", [("circle", {"gamma": 256.0, "margin": 0.25}),
                                           ("multi_similarity", {"beta": 50.0}),
                                           ("supcon", {"temperature": 0.01})])
def test_large_scales_do_not_overflow_in_float32(name, options):
    labels, z = batch(4)
    value, grad = value_and_gradient(FUNCTIONS[name], labels, z.astype("float32"), **options)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, FUNCTIONS[name](labels, z, **options).numpy(), rtol=1e-4)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_unknown_reduction_is_rejected(name):
    with pytest.raises(ValueError, match="all, nonzero. Received: reduction='mean'"):
        FUNCTIONS[name]([0, 0, 1, 1], np.eye(4, 3), reduction="mean")
    with pytest.raises(ValueError, match="Received: reduction='sum'"):
        WRAPPERS[name](reduction="sum")


WRAPPER_OPTIONS = {"contrastive": {"pos_margin": 0.1, "neg_margin": 0.8, "reduction": "all"},
                   "multi_similarity": {"alpha": 3.0, "beta": 40.0, "base": 0.4, "epsilon": 0.2,
                                        "reduction": "nonzero"},
                   "circle": {"margin": 0.25, "gamma": 64.0, "reduction": "all"},
                   "supcon": {"temperature": 0.2, "reduction": "all"}}


@pytest.mark.parametrize("name", list(WRAPPERS))
def test_keras_wrapper_round_trips_its_config(name):
    loss = WRAPPERS[name](**WRAPPER_OPTIONS[name])
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is WRAPPERS[name]
    assert restored.get_config() == loss.get_config()
    assert WRAPPERS[name].from_config(loss.get_config()).get_config() == loss.get_config()
    labels, z = batch(5)
    expected = FUNCTIONS[name](labels, z, **WRAPPER_OPTIONS[name]).numpy()
    np.testing.assert_allclose(restored(labels, z.astype("float32")).numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("name", list(WRAPPERS))
def test_keras_wrapper_trains_an_embedder_in_fit(name):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 4)
    features = (rng.normal(size=(16, 6)) + 2.0 * np.eye(6)[labels]).astype("float32")
    inputs = keras.Input((6,))
    embedder = keras.Model(inputs, keras.layers.UnitNormalization()(keras.layers.Dense(3)(inputs)))
    embedder.compile(optimizer=keras.optimizers.Adam(0.05), loss=WRAPPERS[name]())
    history = embedder.fit(features, labels, batch_size=16, epochs=6, shuffle=False, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.9 * losses[0], losses
