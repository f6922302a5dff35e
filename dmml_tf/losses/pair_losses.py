"""Pair losses on the batch: contrastive, multi-similarity, circle and supervised
contrastive (docs/losses.md states their equations).

Each is a pure function `(labels, embeddings, ...) -> scalar` on the batch's embeddings
(L2-normalised inside; the embedder's rows already are), wrapped by a thin
`keras.losses.Loss` for `compile(loss=...)`. Only anchors with a positive and a negative
give terms (`valid_pairs`), so a batch of one class, or without any positive pair, gives
0. `reduction` averages the terms over all of them (`"all"`) or over those greater than 0
(`"nonzero"`); each loss defaults to pytorch-metric-learning's reduction for it.
"""

import keras
import tensorflow as tf

from dmml_tf.losses.distances import pairwise_distances
from dmml_tf.losses.global_batch import gather_global, replica_share
from dmml_tf.losses.similarities import (check_reduction, cosine_similarities, log1p_sum_exp,
                                         masked_logsumexp, reduce_terms, valid_pairs)


def contrastive_loss(labels, embeddings, pos_margin=0.0, neg_margin=1.0, reduction="nonzero"):
    """Contrastive loss (Hadsell, Chopra, LeCun, CVPR 2006) on Euclidean distances:
    reduce(max(d_ap - pos_margin, 0)) + reduce(max(neg_margin - d_an, 0)).

    The positive and the negative terms are reduced apart and added, as in
    pytorch-metric-learning, whose margins these are; the paper squares both hinges.

    Args:
        labels: tensor `(N,)` of class labels.
        embeddings: float tensor `(N, d)`.
        pos_margin: float. Positive pairs closer than this give no loss. Defaults to `0.0`.
        neg_margin: float. Negative pairs farther than this give no loss. Defaults to `1.0`.
        reduction: str. `"all"` or `"nonzero"`. Defaults to `"nonzero"`.
    """
    positives, negatives = valid_pairs(labels)
    # pairwise_distances masks the zero diagonal, so sqrt never passes a NaN gradient.
    distances = pairwise_distances(tf.math.l2_normalize(embeddings, axis=-1))
    positive_terms = tf.nn.relu(distances - pos_margin)
    negative_terms = tf.nn.relu(neg_margin - distances)
    return (reduce_terms(positive_terms, positives, reduction)
            + reduce_terms(negative_terms, negatives, reduction))


def mine_multi_similarity(similarities, positives, negatives, epsilon=0.1):
    """Multi-similarity pair mining (Wang et al., CVPR 2019): the positives less similar
    than the anchor's most similar negative plus `epsilon`, and the negatives more similar
    than its least similar positive minus `epsilon`.

    Args:
        similarities: float tensor `(N, N)`.
        positives: bool tensor `(N, N)`, the candidate positive pairs.
        negatives: bool tensor `(N, N)`, the candidate negative pairs.
        epsilon: float. The mining margin. Defaults to `0.1`.

    Returns:
        `(mined_positives, mined_negatives)`, both `(N, N)` bool.
    """
    similarities = tf.stop_gradient(similarities)
    inf = tf.constant(float("inf"), similarities.dtype)
    hardest_negative = tf.reduce_max(tf.where(negatives, similarities, -inf), axis=1, keepdims=True)
    hardest_positive = tf.reduce_min(tf.where(positives, similarities, inf), axis=1, keepdims=True)
    return (tf.logical_and(positives, similarities - epsilon < hardest_negative),
            tf.logical_and(negatives, similarities + epsilon > hardest_positive))


def multi_similarity_loss(labels, embeddings, alpha=2.0, beta=50.0, base=0.5, epsilon=0.1,
                          reduction="all"):
    """Multi-similarity loss (Wang et al., CVPR 2019) on the pairs `mine_multi_similarity`
    keeps; per anchor i,
    1/alpha log(1 + sum_P exp(-alpha (s_ip - base)))
    + 1/beta log(1 + sum_N exp(beta (s_in - base))).

    Args:
        labels: tensor `(N,)` of class labels.
        embeddings: float tensor `(N, d)`.
        alpha: float. Scale of the positive similarities. Defaults to `2.0`.
        beta: float. Scale of the negative similarities. Defaults to `50.0`.
        base: float. lambda, the similarity both terms are centred on. Defaults to `0.5`
            (pytorch-metric-learning; the paper uses 1).
        epsilon: float. The mining margin. Defaults to `0.1`.
        reduction: str. `"all"` (the paper's mean over anchors) or `"nonzero"`.
            Defaults to `"all"`.
    """
    positives, negatives = valid_pairs(labels)
    similarities = cosine_similarities(embeddings, embeddings)
    mined_positives, mined_negatives = mine_multi_similarity(similarities, positives, negatives,
                                                             epsilon)
    positive_terms = log1p_sum_exp(-alpha * (similarities - base), mined_positives) / alpha
    negative_terms = log1p_sum_exp(beta * (similarities - base), mined_negatives) / beta
    anchors = tf.reduce_any(positives, axis=1)
    return reduce_terms(positive_terms + negative_terms, anchors, reduction)


def circle_loss(labels, embeddings, margin=0.4, gamma=80.0, reduction="nonzero"):
    """Circle loss (Sun et al., CVPR 2020), pair form; per anchor,
    softplus(logsumexp_P(-gamma a_p (s_p - (1 - margin))) + logsumexp_N(gamma a_n (s_n - margin)))
    with the weights a_p = max(1 + margin - s_p, 0), a_n = max(s_n + margin, 0) held
    constant, as in the authors' code.

    Args:
        labels: tensor `(N,)` of class labels.
        embeddings: float tensor `(N, d)`.
        margin: float. m, the relaxation margin. Defaults to `0.4` (pytorch-metric-learning,
            whose docstring gives it as the paper's for fine-grained retrieval; the paper
            uses 0.25 for faces).
        gamma: float. The scale. Defaults to `80.0` (likewise; 256 for faces).
        reduction: str. `"all"` or `"nonzero"`. Defaults to `"nonzero"`.
    """
    positives, negatives = valid_pairs(labels)
    similarities = cosine_similarities(embeddings, embeddings)
    positive_weights = tf.stop_gradient(tf.nn.relu(1.0 + margin - similarities))
    negative_weights = tf.stop_gradient(tf.nn.relu(similarities + margin))
    positive_logits = -gamma * positive_weights * (similarities - (1.0 - margin))
    negative_logits = gamma * negative_weights * (similarities - margin)
    terms = tf.nn.softplus(masked_logsumexp(positive_logits, positives)
                           + masked_logsumexp(negative_logits, negatives))
    return reduce_terms(terms, tf.reduce_any(positives, axis=1), reduction)


def supcon_loss(labels, embeddings, temperature=0.1, reduction="nonzero"):
    """Supervised contrastive loss, the L_out form (Khosla et al., NeurIPS 2020); per
    anchor i, -1/|P(i)| sum_{p in P(i)} log(exp(s_ip / T) / sum_{a != i} exp(s_ia / T)).
    With one positive per anchor this is NT-Xent.

    Args:
        labels: tensor `(N,)` of class labels.
        embeddings: float tensor `(N, d)`.
        temperature: float. T. Defaults to `0.1`.
        reduction: str. `"all"` or `"nonzero"`. Defaults to `"nonzero"`.
    """
    positives, _ = valid_pairs(labels)
    logits = cosine_similarities(embeddings, embeddings) / temperature
    others = tf.logical_not(tf.eye(tf.shape(logits)[0], dtype=tf.bool))
    log_probabilities = logits - masked_logsumexp(logits, others)[:, None]
    counts = tf.reduce_sum(tf.cast(positives, logits.dtype), axis=1)
    terms = -tf.reduce_sum(tf.where(positives, log_probabilities, 0.0), axis=1)
    return reduce_terms(terms / tf.maximum(counts, 1.0), counts > 0, reduction)


class PairLoss(keras.losses.Loss):
    """Base of the pair losses' Keras wrappers: `y_true` holds the labels, `y_pred` the
    embeddings of the whole batch, and the loss is `function(y_true, y_pred, **options)`.

    `reduction` is the pair loss's own (`"all"` or `"nonzero"`): the function returns a
    scalar, so Keras's reduction stays its default, a no-op on it.
    """

    function = None

    def __init__(self, options, **kwargs):
        super().__init__(**kwargs)
        check_reduction(options["reduction"])
        self.options = options

    def call(self, y_true, y_pred):
        # Under a strategy: pairs across the global batch, each replica's share of the loss.
        labels, embeddings = gather_global(tf.reshape(y_true, [-1])), gather_global(y_pred)
        return replica_share(self.function(labels, embeddings, **self.options))

    def get_config(self):
        return {**super().get_config(), **self.options}


@keras.saving.register_keras_serializable(package="dmml_tf")
class ContrastiveLoss(PairLoss):
    """Keras wrapper of `contrastive_loss` (same arguments and defaults).

    Example:
    ```python
    embedder.compile(optimizer="adam", loss=ContrastiveLoss(neg_margin=1.0))
    embedder.fit(class_balanced_dataset(images, labels, 8, 4, seed=0), steps_per_epoch=10)
    ```
    """

    function = staticmethod(contrastive_loss)

    def __init__(self, pos_margin=0.0, neg_margin=1.0, reduction="nonzero", name="contrastive",
                 **kwargs):
        super().__init__({"pos_margin": pos_margin, "neg_margin": neg_margin,
                          "reduction": reduction}, name=name, **kwargs)


@keras.saving.register_keras_serializable(package="dmml_tf")
class MultiSimilarityLoss(PairLoss):
    """Keras wrapper of `multi_similarity_loss` (same arguments and defaults)."""

    function = staticmethod(multi_similarity_loss)

    def __init__(self, alpha=2.0, beta=50.0, base=0.5, epsilon=0.1, reduction="all",
                 name="multi_similarity", **kwargs):
        super().__init__({"alpha": alpha, "beta": beta, "base": base, "epsilon": epsilon,
                          "reduction": reduction}, name=name, **kwargs)


@keras.saving.register_keras_serializable(package="dmml_tf")
class CircleLoss(PairLoss):
    """Keras wrapper of `circle_loss` (same arguments and defaults)."""

    function = staticmethod(circle_loss)

    def __init__(self, margin=0.4, gamma=80.0, reduction="nonzero", name="circle", **kwargs):
        super().__init__({"margin": margin, "gamma": gamma, "reduction": reduction},
                         name=name, **kwargs)


@keras.saving.register_keras_serializable(package="dmml_tf")
class SupConLoss(PairLoss):
    """Keras wrapper of `supcon_loss` (same arguments and defaults)."""

    function = staticmethod(supcon_loss)

    def __init__(self, temperature=0.1, reduction="nonzero", name="supcon", **kwargs):
        super().__init__({"temperature": temperature, "reduction": reduction}, name=name,
                         **kwargs)
