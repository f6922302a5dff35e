"""Triplet loss with semi-hard negative mining (FaceNet; Schroff et al., 2015).

For every anchor-positive pair (a, p) of the batch, the miner picks one negative n:
the closest negative that is farther from the anchor than the positive (semi-hard);
when no negative is farther, the farthest negative. The loss is the mean over pairs of
max(d(a, p) - d(a, n) + margin, 0), on Euclidean distances.
"""

import keras
import tensorflow as tf

from dmml_tf.losses.distances import pairwise_distances


def mine_semi_hard(distances, labels):
    """Distance from the anchor to its mined negative, for every anchor-positive pair.

    Args:
        distances: float tensor `(N, N)` of pairwise distances.
        labels: int tensor `(N,)`.

    Returns:
        `(negative_distances, positive_mask)`, both `(N, N)`: entry (a, p) is d(a, n) of
        the negative mined for that pair; `positive_mask` marks valid pairs (same label,
        a != p, and at least one negative exists for a).
    """
    labels = tf.reshape(labels, [-1])
    same = tf.equal(labels[:, None], labels[None, :])
    negative = tf.logical_not(same)
    not_self = tf.logical_not(tf.eye(tf.shape(labels)[0], dtype=tf.bool))
    has_negative = tf.reduce_any(negative, axis=1, keepdims=True)
    positive_mask = tf.logical_and(tf.logical_and(same, not_self), has_negative)

    # Candidate [a, p, n]: n is a negative of a farther than p.
    d_ap = distances[:, :, None]
    d_an = distances[:, None, :]
    semi_hard = tf.logical_and(negative[:, None, :], d_an > d_ap)
    big = tf.reduce_max(distances) + 1.0
    closest_semi_hard = tf.reduce_min(tf.where(semi_hard, d_an, big), axis=2)
    farthest = tf.reduce_max(tf.where(negative, distances, -1.0), axis=1)
    found = tf.reduce_any(semi_hard, axis=2)
    negative_distances = tf.where(found, closest_semi_hard, farthest[:, None])
    return negative_distances, positive_mask


def triplet_semi_hard_loss(labels, embeddings, margin=0.2):
    """Mean triplet hinge over all anchor-positive pairs with semi-hard negatives.

    Returns 0 when the batch has no valid pair (no positives or no negatives).

    Args:
        labels: int tensor `(N,)`.
        embeddings: float tensor `(N, d)`.
        margin: float. Hinge margin. Defaults to `0.2`.
    """
    distances = pairwise_distances(embeddings)
    negative_distances, positive_mask = mine_semi_hard(distances, labels)
    hinge = tf.maximum(distances - negative_distances + margin, 0.0)
    mask = tf.cast(positive_mask, hinge.dtype)
    return tf.reduce_sum(hinge * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


@keras.saving.register_keras_serializable(package="dmml_tf")
class TripletSemiHardLoss(keras.losses.Loss):
    """Keras wrapper of `triplet_semi_hard_loss`, for `compile(loss=...)`.

    Args:
        margin: float. Hinge margin. Defaults to `0.2`.
    """

    def __init__(self, margin=0.2, name="triplet_semi_hard", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = margin

    def call(self, y_true, y_pred):
        return triplet_semi_hard_loss(y_true, y_pred, self.margin)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}
