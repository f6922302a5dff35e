"""Proxy losses: one trainable vector (proxy) per training class, held by a `Proxies`
layer. Proxy-Anchor, and the normalised-softmax family: NormSoftmax, CosFace, ArcFace
(docs/losses.md states their equations).

Each is a pure function `(labels, embeddings, proxies, ...) -> scalar`, labels being
class indices into the proxies' rows, plus a thin `keras.losses.Loss` that takes the
`Proxies` layer. Embeddings and proxies are L2-normalised inside.

Training the proxies: the `Proxies` layer must be a sublayer of the trained model (see
its example), so that its weights are trained and saved with the model's. A plain `fit`
trains them at the model's learning rate; `Proxies.lr_multiplier` records the paper's
(Proxy-Anchor: 100 times the model's) for a step that gives them their own optimizer.
"""

import math

import keras
import tensorflow as tf

from dmml_tf.losses.global_batch import gather_global, replica_share
from dmml_tf.losses.similarities import cosine_similarities, log1p_sum_exp


@keras.saving.register_keras_serializable(package="dmml_tf")
class Proxies(keras.layers.Layer):
    """One trainable vector per class, `(num_classes, dim)`; called on embeddings, gives
    their cosine similarities to every proxy, `(N, num_classes)`.

    Initialised like Proxy-Anchor's proxies: normal with standard deviation
    sqrt(2 / num_classes) (Keras's He normal, truncated). The losses normalise them, so
    only their directions matter.

    Args:
        num_classes: int. The number of training classes.
        dim: int. The embedding dimension.
        lr_multiplier: float. The proxies' learning rate as a multiple of the model's,
            for the training step to apply. Defaults to `1.0`.
        seed: int or None. Seed of the initial proxies. Defaults to `None`.

    Example:
    ```python
    class ProxyEmbedder(keras.Model):
        def __init__(self, embedder, num_classes):
            super().__init__()
            self.embedder = embedder
            self.proxies = Proxies(num_classes, embedder.output_shape[-1], lr_multiplier=100.0)

        def call(self, images):
            return self.embedder(images)

    model = ProxyEmbedder(embedder, num_classes=98)
    model.compile(optimizer="adam", loss=ProxyAnchorLoss(model.proxies))
    ```
    """

    def __init__(self, num_classes, dim, lr_multiplier=1.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if num_classes < 1 or dim < 1 or lr_multiplier <= 0:
            raise ValueError("`num_classes` and `dim` must be at least 1 and `lr_multiplier` "
                             f"positive. Received: num_classes={num_classes}, dim={dim}, "
                             f"lr_multiplier={lr_multiplier}")
        self.num_classes = num_classes
        self.dim = dim
        self.lr_multiplier = lr_multiplier
        self.seed = seed
        self.vectors = self.add_weight(shape=(num_classes, dim), name="proxies",
                                       initializer=keras.initializers.HeNormal(seed))
        self.built = True

    def call(self, embeddings):
        return cosine_similarities(embeddings, self.vectors)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "dim": self.dim,
                "lr_multiplier": self.lr_multiplier, "seed": self.seed}


def class_indices(labels, proxies):
    """`labels` as int32 `(N,)`, checked to lie in [0, number of proxies).

    Raises:
        tf.errors.InvalidArgumentError: a label is out of range (also in graph mode; XLA
            drops the check).
    """
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    num_classes = tf.shape(proxies)[0]
    message = f"labels must be class indices in [0, num_classes = {proxies.shape[0]})"
    checks = [tf.debugging.assert_non_negative(labels, message=message),
              tf.debugging.assert_less(labels, num_classes, message=message)]
    # In a graph, the ops that use the labels must wait for the checks, or a gather or
    # cross-entropy may fail first with a vaguer message.
    with tf.control_dependencies(checks):
        return tf.identity(labels)


def proxy_anchor_loss(labels, embeddings, proxies, alpha=32.0, margin=0.1):
    """Proxy-Anchor loss (Kim et al., CVPR 2020):
    1/|P+| sum_{p in P+} log(1 + sum_{x in X_p+} exp(-alpha (s(x, p) - margin)))
    + 1/|P| sum_{p in P} log(1 + sum_{x in X_p-} exp(alpha (s(x, p) + margin))),
    P+ being the proxies of the batch's classes, X_p+ their embeddings, X_p- the others.

    Args:
        labels: int tensor `(N,)` of class indices.
        embeddings: float tensor `(N, d)`.
        proxies: float tensor `(C, d)`.
        alpha: float. The scale. Defaults to `32.0`.
        margin: float. delta. Defaults to `0.1`.
    """
    labels = class_indices(labels, proxies)
    similarities = cosine_similarities(embeddings, proxies)
    positives = tf.cast(tf.one_hot(labels, tf.shape(proxies)[0]), tf.bool)
    positive_terms = log1p_sum_exp(-alpha * (similarities - margin), positives, axis=0)
    negative_terms = log1p_sum_exp(alpha * (similarities + margin), ~positives, axis=0)
    present = tf.reduce_sum(tf.cast(tf.reduce_any(positives, axis=0), similarities.dtype))
    # Proxies without an embedding in the batch have positive terms of exactly 0.
    return tf.reduce_sum(positive_terms) / tf.maximum(present, 1.0) + tf.reduce_mean(negative_terms)


def margin_softmax_loss(labels, embeddings, proxies, scale, margin=0.0, margin_type="cosine"):
    """Mean cross-entropy of softmax(scale * cos(z_i, proxies)), the true class's cosine
    lowered by a margin: `"cosine"`, cos(theta) - margin (CosFace), or `"angular"`,
    cos(theta + margin) (ArcFace; past theta = pi - margin, where that stops decreasing,
    cos(theta) - margin sin(margin) as in the authors' code).

    Args:
        labels: int tensor `(N,)` of class indices.
        embeddings: float tensor `(N, d)`.
        proxies: float tensor `(C, d)`.
        scale: float. s, the inverse temperature.
        margin: float. m. Defaults to `0.0`.
        margin_type: str. `"cosine"` or `"angular"`. Defaults to `"cosine"`.
    """
    if margin_type not in ("cosine", "angular"):
        raise ValueError(f"`margin_type` must be one of cosine, angular. "
                         f"Received: margin_type={margin_type!r}")
    labels = class_indices(labels, proxies)
    cosines = cosine_similarities(embeddings, proxies)
    if margin_type == "cosine":
        target = cosines - margin
    else:
        # Clamped away from 0 so the square root's gradient stays finite at theta = 0.
        sines = tf.sqrt(tf.maximum(1.0 - tf.square(cosines), 1e-12))
        target = tf.where(cosines > -math.cos(margin),
                          cosines * math.cos(margin) - sines * math.sin(margin),
                          cosines - margin * math.sin(margin))
    is_true = tf.cast(tf.one_hot(labels, tf.shape(proxies)[0]), tf.bool)
    logits = scale * tf.where(is_true, target, cosines)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))


def normsoftmax_loss(labels, embeddings, proxies, temperature=0.05):
    """NormSoftmax (Zhai & Wu, BMVC 2019): softmax cross-entropy of cos(z_i, proxies) / T.

    Args:
        labels: int tensor `(N,)` of class indices.
        embeddings: float tensor `(N, d)`.
        proxies: float tensor `(C, d)`.
        temperature: float. T. Defaults to `0.05`.
    """
    return margin_softmax_loss(labels, embeddings, proxies, 1.0 / temperature)


def cosface_loss(labels, embeddings, proxies, scale=64.0, margin=0.35):
    """CosFace (Wang et al., CVPR 2018): `margin_softmax_loss` with the cosine margin.

    Args:
        labels: int tensor `(N,)` of class indices.
        embeddings: float tensor `(N, d)`.
        proxies: float tensor `(C, d)`.
        scale: float. s. Defaults to `64.0`.
        margin: float. m, subtracted from the true class's cosine. Defaults to `0.35`.
    """
    return margin_softmax_loss(labels, embeddings, proxies, scale, margin, "cosine")


def arcface_loss(labels, embeddings, proxies, scale=64.0, margin=0.5):
    """ArcFace (Deng et al., CVPR 2019): `margin_softmax_loss` with the angular margin.

    Args:
        labels: int tensor `(N,)` of class indices.
        embeddings: float tensor `(N, d)`.
        proxies: float tensor `(C, d)`.
        scale: float. s. Defaults to `64.0`.
        margin: float. m in radians, added to the true class's angle. Defaults to `0.5`.
    """
    return margin_softmax_loss(labels, embeddings, proxies, scale, margin, "angular")


class ProxyLoss(keras.losses.Loss):
    """Base of the proxy losses' Keras wrappers: `y_true` holds the class indices, `y_pred`
    the embeddings, and the loss is `function(y_true, y_pred, proxies.vectors, **options)`.

    `get_config` stores the `Proxies` layer's config, not its weights: `from_config`
    builds a fresh layer (the same initial proxies when it has a seed), which must then
    become a sublayer of the trained model as well.
    """

    function = None

    def __init__(self, proxies, options, **kwargs):
        super().__init__(**kwargs)
        self.proxies = proxies
        self.options = options

    def call(self, y_true, y_pred):
        # Under a strategy: the global batch, each replica's share of its loss.
        labels, embeddings = gather_global(tf.reshape(y_true, [-1])), gather_global(y_pred)
        return replica_share(self.function(labels, embeddings, self.proxies.vectors, **self.options))

    def get_config(self):
        return {**super().get_config(), **self.options,
                "proxies": keras.saving.serialize_keras_object(self.proxies)}

    @classmethod
    def from_config(cls, config):
        proxies = keras.saving.deserialize_keras_object(config["proxies"])
        return cls(**{**config, "proxies": proxies})


@keras.saving.register_keras_serializable(package="dmml_tf")
class ProxyAnchorLoss(ProxyLoss):
    """Keras wrapper of `proxy_anchor_loss`; `proxies` is a `Proxies` layer (the paper
    trains it at 100 times the model's learning rate)."""

    function = staticmethod(proxy_anchor_loss)

    def __init__(self, proxies, alpha=32.0, margin=0.1, name="proxy_anchor", **kwargs):
        super().__init__(proxies, {"alpha": alpha, "margin": margin}, name=name, **kwargs)


@keras.saving.register_keras_serializable(package="dmml_tf")
class NormSoftmaxLoss(ProxyLoss):
    """Keras wrapper of `normsoftmax_loss`; `proxies` is a `Proxies` layer."""

    function = staticmethod(normsoftmax_loss)

    def __init__(self, proxies, temperature=0.05, name="normsoftmax", **kwargs):
        super().__init__(proxies, {"temperature": temperature}, name=name, **kwargs)


@keras.saving.register_keras_serializable(package="dmml_tf")
class CosFaceLoss(ProxyLoss):
    """Keras wrapper of `cosface_loss`; `proxies` is a `Proxies` layer."""

    function = staticmethod(cosface_loss)

    def __init__(self, proxies, scale=64.0, margin=0.35, name="cosface", **kwargs):
        super().__init__(proxies, {"scale": scale, "margin": margin}, name=name, **kwargs)


@keras.saving.register_keras_serializable(package="dmml_tf")
class ArcFaceLoss(ProxyLoss):
    """Keras wrapper of `arcface_loss`; `proxies` is a `Proxies` layer."""

    function = staticmethod(arcface_loss)

    def __init__(self, proxies, scale=64.0, margin=0.5, name="arcface", **kwargs):
        super().__init__(proxies, {"scale": scale, "margin": margin}, name=name, **kwargs)
