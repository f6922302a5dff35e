"""Relational (RKD distance) loss between a student and a teacher embedding.

D(u)_ij = ||u_i - u_j|| / mean_{i != j} ||u_i - u_j||, and the loss is
mean_{i != j} Huber_1(D(s)_ij, D(t)_ij) with the teacher side under stop_gradient
(Park et al., "Relational Knowledge Distillation", 2019).
"""

import keras
import tensorflow as tf

from dmml_tf.losses.distances import pairwise_distances


def normalized_distances(embeddings):
    """Pairwise distances divided by their off-diagonal mean, `(N, N)`."""
    distances = pairwise_distances(embeddings)
    n = tf.cast(tf.shape(distances)[0], distances.dtype)
    mean = tf.reduce_sum(distances) / tf.maximum(n * (n - 1.0), 1.0)
    return distances / tf.maximum(mean, 1e-12)


def relational_distance_loss(student, teacher):
    """RKD distance loss of `student` towards `teacher`; no gradient reaches `teacher`.

    Args:
        student: float tensor `(N, d)`.
        teacher: float tensor `(N, d')`; only its distance structure is used.
    """
    target = tf.stop_gradient(normalized_distances(teacher))
    error = tf.abs(normalized_distances(student) - target)
    huber = tf.where(error < 1.0, 0.5 * tf.square(error), error - 0.5)
    n = tf.cast(tf.shape(error)[0], error.dtype)
    # The diagonal is zero on both sides, so summing over all pairs is the off-diagonal sum.
    return tf.reduce_sum(huber) / tf.maximum(n * (n - 1.0), 1.0)


@keras.saving.register_keras_serializable(package="dmml_tf")
class RelationalDistanceLoss(keras.losses.Loss):
    """Keras wrapper of `relational_distance_loss`: `y_true` is the teacher embedding."""

    def __init__(self, name="relational_distance", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return relational_distance_loss(y_pred, y_true)
