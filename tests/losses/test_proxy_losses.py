import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from dmml_tf.losses.proxy_losses import (ArcFaceLoss, CosFaceLoss, NormSoftmaxLoss, Proxies,
                                         ProxyAnchorLoss, arcface_loss, cosface_loss,
                                         margin_softmax_loss, normsoftmax_loss,
                                         proxy_anchor_loss)
from tests.losses.finite_differences import assert_gradient_matches_finite_differences


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def cosine(u, v):
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


def reference_proxy_anchor(labels, z, proxies, alpha, margin):
    """Kim et al.'s eq. (4), one loop per proxy."""
    classes = range(len(proxies))
    present = [c for c in classes if c in set(labels)]
    positive = sum(math.log(1 + sum(math.exp(-alpha * (cosine(z[i], proxies[c]) - margin))
                                    for i in range(len(z)) if labels[i] == c))
                   for c in present) / len(present)
    negative = sum(math.log(1 + sum(math.exp(alpha * (cosine(z[i], proxies[c]) + margin))
                                    for i in range(len(z)) if labels[i] != c))
                   for c in classes) / len(proxies)
    return positive + negative


def reference_margin_softmax(labels, z, proxies, scale, margin, margin_type):
    """Cross-entropy per sample, the true class's logit from its angle by acos."""
    losses = []
    for i, label in enumerate(labels):
        logits = []
        for c in range(len(proxies)):
            c_cos = cosine(z[i], proxies[c])
            if c == label and margin_type == "cosine":
                c_cos -= margin
            elif c == label and margin_type == "angular":
                theta = math.acos(c_cos)
                c_cos = (math.cos(theta + margin) if theta + margin <= math.pi
                         else c_cos - margin * math.sin(margin))
            logits.append(scale * c_cos)
        top = max(logits)
        log_sum = top + math.log(sum(math.exp(l - top) for l in logits))
        losses.append(log_sum - logits[label])
    return sum(losses) / len(losses)


# name -> (loss(labels, z, proxies), reference(labels, z, proxies))
LOSSES = {
    "proxy_anchor": (proxy_anchor_loss,
                     lambda y, z, p: reference_proxy_anchor(y, z, p, 32.0, 0.1)),
    "proxy_anchor_small_alpha": (lambda y, z, p: proxy_anchor_loss(y, z, p, alpha=4.0, margin=0.2),
                                 lambda y, z, p: reference_proxy_anchor(y, z, p, 4.0, 0.2)),
    "normsoftmax": (normsoftmax_loss,
                    lambda y, z, p: reference_margin_softmax(y, z, p, 20.0, 0.0, "cosine")),
    "cosface": (cosface_loss,
                lambda y, z, p: reference_margin_softmax(y, z, p, 64.0, 0.35, "cosine")),
    "arcface": (arcface_loss,
                lambda y, z, p: reference_margin_softmax(y, z, p, 64.0, 0.5, "angular")),
    "arcface_small_scale": (lambda y, z, p: margin_softmax_loss(y, z, p, 4.0, 0.3, "angular"),
                            lambda y, z, p: reference_margin_softmax(y, z, p, 4.0, 0.3, "angular")),
}
WRAPPERS = {"proxy_anchor": (ProxyAnchorLoss, proxy_anchor_loss, {"alpha": 16.0, "margin": 0.2}),
            "normsoftmax": (NormSoftmaxLoss, normsoftmax_loss, {"temperature": 0.1}),
            "cosface": (CosFaceLoss, cosface_loss, {"scale": 30.0, "margin": 0.2}),
            "arcface": (ArcFaceLoss, arcface_loss, {"scale": 30.0, "margin": 0.3})}


def batch(seed, n=10, classes=5, dim=4):
    """Labels that leave one class without a sample, random unit embeddings, and random
    proxies of any length (the losses normalise them), float64. The first sample points
    away from its proxy, past pi - 0.5 from it (ArcFace's other branch)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes - 1, size=n)
    proxies = rng.normal(size=(classes, dim)) * 3.0
    z = unit(rng.normal(size=(n, dim)))
    z[0] = unit(-proxies[labels[0]][None] + 0.1 * rng.normal(size=(1, dim)))[0]
    return labels, z, proxies


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", list(LOSSES))
def test_matches_loop_reference(name, seed):
    loss, reference = LOSSES[name]
    labels, z, proxies = batch(seed)
    assert math.acos(cosine(z[0], proxies[labels[0]])) > math.pi - 0.5
    expected = reference(labels, z, proxies)
    assert expected > 0
    np.testing.assert_allclose(loss(labels, z, proxies).numpy(), expected, rtol=1e-9)


@pytest.mark.parametrize("name", list(LOSSES))
def test_gradients_match_finite_differences(name):
    loss, _ = LOSSES[name]
    labels, z, proxies = batch(3, n=8)
    labels = tf.constant(labels)
    entries = [(0, 0), (3, 2), (4, 1), (7, 3)]
    assert_gradient_matches_finite_differences(lambda x: loss(labels, x, proxies), z, entries,
                                               atol=1e-7)
    # Proxy 4 has no sample: it gets gradient only as every sample's negative.
    assert_gradient_matches_finite_differences(lambda p: loss(labels, z, p), proxies,
                                               [(0, 1), (2, 3), (4, 0)], atol=1e-7)


@pytest.mark.parametrize("labels", [[0, 0, 0, 0], [0, 0, 1, 1]], ids=["one_class", "duplicates"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_one_class_and_duplicate_rows_give_finite_values_and_gradients(name, labels):
    loss, _ = LOSSES[name]
    z = tf.Variable(unit(np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]], "float32")))
    # The first proxy equals the first rows exactly: theta = 0, where arccos has no slope.
    proxies = tf.Variable(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], "float32"))
    with tf.GradientTape() as tape:
        value = loss(tf.constant(labels), z, proxies)
    gradients = tape.gradient(value, [z, proxies])
    assert np.isfinite(value.numpy())
    assert all(np.all(np.isfinite(g.numpy())) for g in gradients)


@pytest.mark.parametrize("labels", [[0, 3], [-1, 0]], ids=["too_large", "negative"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_labels_out_of_range_are_rejected(name, labels):
    loss, _ = LOSSES[name]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"labels must be class indices in \[0, num_classes = 3\)"):
        loss(tf.constant(labels), np.eye(2, 4), np.eye(3, 4))


@pytest.mark.parametrize("name", list(LOSSES))
def test_labels_out_of_range_are_rejected_in_a_graph(name):
    loss, _ = LOSSES[name]
    graph_loss = tf.function(lambda labels: loss(labels, np.eye(2, 4), np.eye(3, 4)))
    for _ in range(3):  # the check runs before the ops that use the labels, every time
        with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes = 3"):
            graph_loss(tf.constant([1, 5]))


def test_unknown_margin_type_is_rejected():
    with pytest.raises(ValueError, match="cosine, angular. Received: margin_type='additive'"):
        margin_softmax_loss([0], np.eye(1, 2), np.eye(2), 1.0, 0.1, "additive")


def test_proxies_layer_holds_seeded_vectors_and_gives_cosine_similarities():
    layer = Proxies(200, 8, lr_multiplier=100.0, seed=3)
    again = Proxies.from_config(layer.get_config())
    assert layer.get_config()["num_classes"] == 200 and again.lr_multiplier == 100.0
    np.testing.assert_array_equal(again.vectors.numpy(), layer.vectors.numpy())
    # He normal over the classes, as Proxy-Anchor's Kaiming initialisation: std sqrt(2 / 200).
    assert np.std(layer.vectors.numpy()) == pytest.approx(0.1, rel=0.1)
    assert [w.name for w in layer.trainable_weights] == ["proxies"]
    embeddings = unit(np.random.default_rng(0).normal(size=(3, 8))).astype("float32")
    vectors = unit(layer.vectors.numpy())
    np.testing.assert_allclose(layer(embeddings).numpy(), embeddings @ vectors.T, atol=1e-6)


@pytest.mark.parametrize("arguments", [(0, 4, 1.0), (3, 0, 1.0), (3, 4, 0.0)])
def test_proxies_layer_rejects_bad_arguments(arguments):
    with pytest.raises(ValueError, match="Received: num_classes="):
        Proxies(*arguments)


@pytest.mark.parametrize("name", list(WRAPPERS))
def test_keras_wrapper_round_trips_its_config(name):
    wrapper, function, options = WRAPPERS[name]
    loss = wrapper(Proxies(5, 4, lr_multiplier=100.0, seed=1), **options)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is wrapper and type(restored.proxies) is Proxies
    assert restored.get_config() == loss.get_config()
    assert restored.proxies is not loss.proxies  # a fresh layer, with the same seeded start
    labels, z, _ = batch(4)
    expected = function(labels, z, loss.proxies.vectors.numpy(), **options).numpy()
    np.testing.assert_allclose(restored(labels, z.astype("float32")).numpy(), expected, rtol=1e-5)


class ProxyEmbedder(keras.Model):
    """The documented way to train proxies in a plain fit: a sublayer of the model."""

    def __init__(self, num_classes, dim, **kwargs):
        super().__init__(**kwargs)
        self.head = keras.layers.Dense(dim)
        self.proxies = Proxies(num_classes, dim, seed=0)

    def call(self, features):
        return tf.math.l2_normalize(self.head(features), axis=-1)


@pytest.mark.parametrize("name", list(WRAPPERS))
def test_keras_wrapper_trains_embedder_and_proxies_in_fit(name, tmp_path):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 4)
    features = (rng.normal(size=(16, 6)) + 2.0 * np.eye(6)[labels]).astype("float32")
    model = ProxyEmbedder(4, 3)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=WRAPPERS[name][0](model.proxies))
    start = model.proxies.vectors.numpy().copy()
    history = model.fit(features, labels, batch_size=16, epochs=6, shuffle=False, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.9 * losses[0], losses
    assert np.abs(model.proxies.vectors.numpy() - start).max() > 0.1
    model.save_weights(tmp_path / "model.weights.h5")
    reloaded = ProxyEmbedder(4, 3)
    reloaded(features[:1])
    reloaded.load_weights(tmp_path / "model.weights.h5")
    np.testing.assert_array_equal(reloaded.proxies.vectors.numpy(), model.proxies.vectors.numpy())
