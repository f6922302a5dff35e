"""Triplet mining: which negative (and positive) each anchor is trained against.

Every miner takes the `(N, N)` pairwise distances and the `(N,)` labels and returns
`(negative_distances, pair_mask)`, both `(N, N)`: entry (a, p) of `negative_distances` is
d(a, n) for the negative n mined for the anchor-positive pair (a, p), and `pair_mask`
marks the pairs the triplet loss averages over. The loss is then
mean over marked pairs of max(d(a, p) - d(a, n) + margin, 0).

- `mine_semi_hard` (FaceNet; Schroff et al., 2015): every pair; the closest negative
  farther than the positive, else the farthest negative.
- `mine_batch_hard` (Hermans et al., 2017): one pair per anchor, its farthest positive,
  against its closest negative.
- `mine_distance_weighted` (Wu et al., "Sampling Matters in Deep Embedding Learning",
  2017): every pair, with a negative sampled with probability proportional to
  1 / q(d), q being the density of distances between random points on the unit sphere.
"""

import tensorflow as tf


def _pair_masks(labels):
    """`(positive_pairs, negatives)`, both `(N, N)` bool: same-label pairs a != p whose
    anchor has at least one negative, and different-label pairs."""
    labels = tf.reshape(labels, [-1])
    same = tf.equal(labels[:, None], labels[None, :])
    negatives = tf.logical_not(same)
    not_self = tf.logical_not(tf.eye(tf.shape(labels)[0], dtype=tf.bool))
    has_negative = tf.reduce_any(negatives, axis=1, keepdims=True)
    return tf.logical_and(tf.logical_and(same, not_self), has_negative), negatives


def mine_semi_hard(distances, labels):
    """Semi-hard negatives for every anchor-positive pair.

    Args:
        distances: float tensor `(N, N)` of pairwise distances.
        labels: int tensor `(N,)`.

    Returns:
        `(negative_distances, pair_mask)`, see the module docstring.
    """
    pair_mask, negatives = _pair_masks(labels)
    # Candidate [a, p, n]: n is a negative of a farther than p.
    d_ap = distances[:, :, None]
    d_an = distances[:, None, :]
    semi_hard = tf.logical_and(negatives[:, None, :], d_an > d_ap)
    big = tf.reduce_max(distances) + 1.0
    closest_semi_hard = tf.reduce_min(tf.where(semi_hard, d_an, big), axis=2)
    farthest = tf.reduce_max(tf.where(negatives, distances, -1.0), axis=1)
    found = tf.reduce_any(semi_hard, axis=2)
    return tf.where(found, closest_semi_hard, farthest[:, None]), pair_mask


def mine_batch_hard(distances, labels):
    """The hardest positive and the hardest negative of every anchor.

    Args:
        distances: float tensor `(N, N)` of pairwise distances.
        labels: int tensor `(N,)`.

    Returns:
        `(negative_distances, pair_mask)`; `pair_mask` marks one pair per anchor that
        has a positive and a negative: (a, its farthest positive).
    """
    valid_pairs, negatives = _pair_masks(labels)
    hardest_positive = tf.argmax(tf.where(valid_pairs, distances, -1.0), axis=1)
    has_pair = tf.reduce_any(valid_pairs, axis=1, keepdims=True)
    pair_mask = tf.logical_and(tf.one_hot(hardest_positive, tf.shape(distances)[1]) > 0, has_pair)
    big = tf.reduce_max(distances) + 1.0
    closest_negative = tf.reduce_min(tf.where(negatives, distances, big), axis=1)
    return tf.broadcast_to(closest_negative[:, None], tf.shape(distances)), pair_mask


def distance_weights(distances, labels, embedding_dim, cutoff=0.5, nonzero_loss_cutoff=1.4):
    """Sampling weights of each anchor's negatives, proportional to 1 / q(d), `(N, N)`.

    log q(d) = (n - 2) log d + (n - 3) / 2 * log(1 - d^2 / 4) for unit vectors in n
    dimensions, with d clipped to at least `cutoff`. Negatives at `nonzero_loss_cutoff`
    or farther get weight 0 (they give no loss); an anchor left without any weighted
    negative samples its negatives uniformly. Rows are scaled so their largest weight is 1.

    Args:
        distances: float tensor `(N, N)` between unit vectors.
        labels: int tensor `(N,)`.
        embedding_dim: int or int tensor. n, the dimension of the embeddings.
        cutoff: float. Smallest distance used in q. Defaults to `0.5`.
        nonzero_loss_cutoff: float. Negatives this far or farther are never sampled.
            Defaults to `1.4`.
    """
    _, negatives = _pair_masks(labels)
    clipped = tf.clip_by_value(tf.stop_gradient(distances), cutoff, 1.999)
    n = tf.cast(embedding_dim, clipped.dtype)
    log_q = ((n - 2.0) * tf.math.log(clipped)
             + (n - 3.0) / 2.0 * tf.math.log(1.0 - 0.25 * tf.square(clipped)))
    weighted = tf.logical_and(negatives, clipped < nonzero_loss_cutoff)
    row_max = tf.reduce_max(tf.where(weighted, -log_q, tf.reduce_min(-log_q)), axis=1,
                            keepdims=True)
    weights = tf.where(weighted, tf.exp(-log_q - row_max), 0.0)
    uniform = tf.cast(negatives, weights.dtype)
    return tf.where(tf.reduce_any(weighted, axis=1, keepdims=True), weights, uniform)


def mine_distance_weighted(distances, labels, embedding_dim, uniform, cutoff=0.5,
                           nonzero_loss_cutoff=1.4):
    """A negative sampled by `distance_weights` for every anchor-positive pair.

    Sampling inverts the cumulative weights of the anchor's row: the pair (a, p) takes
    the first negative whose cumulative weight exceeds `uniform[a, p]` times the row's
    total, so the same `uniform` always gives the same negatives.

    Args:
        distances: float tensor `(N, N)` between unit vectors.
        labels: int tensor `(N,)`.
        embedding_dim: int or int tensor. Dimension of the embeddings.
        uniform: float tensor `(N, N)` of draws from [0, 1), one per pair.
        cutoff: float. See `distance_weights`. Defaults to `0.5`.
        nonzero_loss_cutoff: float. See `distance_weights`. Defaults to `1.4`.

    Returns:
        `(negative_distances, pair_mask)`, see the module docstring.
    """
    pair_mask, _ = _pair_masks(labels)
    weights = distance_weights(distances, labels, embedding_dim, cutoff, nonzero_loss_cutoff)
    cumulative = tf.cumsum(weights, axis=1)
    targets = tf.cast(uniform, weights.dtype) * cumulative[:, -1:]
    chosen = tf.searchsorted(cumulative, targets, side="right")
    # Rounding can put a target at the row's total: fall back to its last weighted column.
    n = tf.shape(weights)[1]
    last_weighted = n - 1 - tf.argmax(tf.reverse(weights, axis=[1]) > 0, axis=1, output_type=tf.int32)
    chosen = tf.minimum(chosen, last_weighted[:, None])
    return tf.gather(distances, chosen, batch_dims=1), pair_mask
