"""What the pair and proxy losses share: cosine similarities, the valid pairs of a batch,
log-sum-exp over a mask, and the reduction of loss terms to a scalar.

Notation of docs/losses.md: embeddings z_i, s_ij = cos(z_i, z_j) and, between unit
vectors, d_ij = ||z_i - z_j|| = sqrt(2 - 2 s_ij).
"""

import tensorflow as tf

from dmml_tf.losses.mining import _pair_masks

REDUCTIONS = ("all", "nonzero")


def cosine_similarities(embeddings, others):
    """Cosine similarities between the rows of `embeddings` and of `others`, `(N, M)`.

    Both are L2-normalised first: a no-op for the embedder's unit rows, and what makes
    free vectors such as proxies comparable.

    Args:
        embeddings: float tensor `(N, d)`.
        others: float tensor `(M, d)`, cast to the dtype of `embeddings`.
    """
    embeddings = tf.math.l2_normalize(tf.convert_to_tensor(embeddings), axis=-1)
    others = tf.math.l2_normalize(tf.cast(others, embeddings.dtype), axis=-1)
    return tf.matmul(embeddings, others, transpose_b=True)


def valid_pairs(labels):
    """`(positives, negatives)`, both `(N, N)` bool, of the anchors that have both.

    positives[a, p]: p != a shares a's label; negatives[a, n]: n has another label. An
    anchor without a positive or without a negative has neither (as in the triplet loss),
    so a batch of one class, or of distinct classes, has no valid pair.

    Args:
        labels: tensor `(N,)` or `(N, 1)` of class labels (any dtype `tf.equal` compares).
    """
    positives, negatives = _pair_masks(tf.reshape(labels, [-1]))
    has_positive = tf.reduce_any(positives, axis=1, keepdims=True)
    return positives, tf.logical_and(negatives, has_positive)


def masked_logsumexp(logits, mask, axis=-1):
    """log sum_{mask} exp(logits) along `axis`; 0, with zero gradient, where the mask is
    empty (the callers drop those rows).

    Masked-out entries become -inf, whose exp and gradient are 0; an empty row is replaced
    by zeros first, because -inf - (-inf) would make the gradient NaN.

    Args:
        logits: float tensor.
        mask: bool tensor of the same shape.
        axis: int. The axis reduced. Defaults to `-1`.
    """
    has_any = tf.reduce_any(mask, axis=axis, keepdims=True)
    kept = tf.where(mask, logits, tf.constant(-float("inf"), logits.dtype))
    safe = tf.where(has_any, kept, tf.zeros_like(logits))
    return tf.where(tf.squeeze(has_any, axis), tf.reduce_logsumexp(safe, axis=axis), 0.0)


def log1p_sum_exp(logits, mask, axis=-1):
    """log(1 + sum_{mask} exp(logits)) along `axis`, exactly 0 for an empty mask.

    Computed as a log-sum-exp with an extra zero logit, so it never overflows.

    Args:
        logits: float tensor.
        mask: bool tensor of the same shape.
        axis: int. The axis reduced. Defaults to `-1`.
    """
    one = tf.ones_like(tf.reduce_any(mask, axis=axis, keepdims=True))
    zero = tf.zeros_like(tf.reduce_sum(logits, axis=axis, keepdims=True))
    return masked_logsumexp(tf.concat([zero, logits], axis), tf.concat([one, mask], axis), axis)


def check_reduction(reduction):
    """Raise a ValueError unless `reduction` is one of `REDUCTIONS`."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {', '.join(REDUCTIONS)}. "
                         f"Received: reduction={reduction!r}")


def reduce_terms(terms, mask, reduction):
    """Mean of the loss `terms` where `mask` holds; 0 when no term is averaged.

    Args:
        terms: float tensor of loss terms.
        mask: bool tensor of the same shape: the terms that exist.
        reduction: str. `"all"`: the mean over every existing term; `"nonzero"`: over the
            terms greater than 0 (pytorch-metric-learning's AvgNonZeroReducer).
    """
    check_reduction(reduction)
    if reduction == "nonzero":
        mask = tf.logical_and(mask, terms > 0.0)
    weights = tf.cast(mask, terms.dtype)
    return tf.reduce_sum(tf.where(mask, terms, 0.0)) / tf.maximum(tf.reduce_sum(weights), 1.0)
