"""Relational losses between a student and a teacher embedding of the same batch
(Park et al., "Relational Knowledge Distillation", 2019); the teacher side is always
under stop_gradient.

- distance: D(u)_ij = ||u_i - u_j|| / mean_{i != j} ||u_i - u_j||, and
  L_dist = mean_{i != j} Huber_1(D(s)_ij, D(t)_ij).
- angle: A(u)_ijk = cos of the angle at u_i between u_j and u_k, and
  L_angle = mean over distinct i, j, k of Huber_1(A(s)_ijk, A(t)_ijk).
- similarity_kl (the form S2SD distils with, Roth et al. 2021): per row i, the softmax
  over j != i of the cosine similarities divided by a temperature T, and
  L_kl = mean_i KL(p_t(i) || p_s(i)).

`RELATIONAL` maps the config's `loss.relational` names to these forms.
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


def huber(error):
    """Huber loss with threshold 1 of `error`, elementwise."""
    error = tf.abs(error)
    return tf.where(error < 1.0, 0.5 * tf.square(error), error - 0.5)


def relational_distance_loss(student, teacher):
    """RKD distance loss of `student` towards `teacher`; no gradient reaches `teacher`.

    Args:
        student: float tensor `(N, d)`.
        teacher: float tensor `(N, d')`; only its distance structure is used.
    """
    target = tf.stop_gradient(normalized_distances(teacher))
    errors = huber(normalized_distances(student) - target)
    n = tf.cast(tf.shape(errors)[0], errors.dtype)
    # The diagonal is zero on both sides, so summing over all pairs is the off-diagonal sum.
    return tf.reduce_sum(errors) / tf.maximum(n * (n - 1.0), 1.0)


def angle_cosines(embeddings):
    """`(N, N, N)`: entry (i, j, k) is the cosine of the angle at u_i between u_j and u_k;
    0 when j or k equals i."""
    embeddings = tf.convert_to_tensor(embeddings)
    directions = tf.math.l2_normalize(embeddings[None, :, :] - embeddings[:, None, :], axis=-1)
    return tf.matmul(directions, directions, transpose_b=True)


def relational_angle_loss(student, teacher):
    """RKD angle loss of `student` towards `teacher`; no gradient reaches `teacher`.

    Args:
        student: float tensor `(N, d)`.
        teacher: float tensor `(N, d')`; only its angles are used.
    """
    target = tf.stop_gradient(angle_cosines(teacher))
    errors = huber(angle_cosines(student) - target)
    n = tf.cast(tf.shape(errors)[0], errors.dtype)
    # Triplets with j == i or k == i are 0 on both sides and j == k is 1 on both sides,
    # so the full sum is the sum over distinct triplets.
    return tf.reduce_sum(errors) / tf.maximum(n * (n - 1.0) * (n - 2.0), 1.0)


def similarity_distributions(embeddings, temperature):
    """Row-wise log-softmax of cosine similarities over the other N - 1 items, `(N, N - 1)`."""
    unit = tf.math.l2_normalize(embeddings, axis=-1)
    similarities = tf.matmul(unit, unit, transpose_b=True)
    n = tf.shape(similarities)[0]
    off_diagonal = tf.reshape(tf.boolean_mask(similarities, ~tf.eye(n, dtype="bool")), [n, n - 1])
    return tf.nn.log_softmax(off_diagonal / temperature, axis=-1)


def similarity_kl_loss(student, teacher, temperature=1.0):
    """mean_i KL(p_teacher(i) || p_student(i)) over softmaxed cosine similarities; no
    gradient reaches `teacher`.

    Args:
        student: float tensor `(N, d)`.
        teacher: float tensor `(N, d')`.
        temperature: float. Divides the similarities before the softmax. Defaults to `1.0`.
    """
    target = tf.stop_gradient(similarity_distributions(teacher, temperature))
    log_student = similarity_distributions(student, temperature)
    return tf.reduce_mean(tf.reduce_sum(tf.exp(target) * (target - log_student), axis=-1))


def rkd_loss(student, teacher, distance_weight=1.0, angle_weight=0.0):
    """`distance_weight * L_dist + angle_weight * L_angle`; a zero-weight term is skipped.

    Args:
        student: float tensor `(N, d)`.
        teacher: float tensor `(N, d')`.
        distance_weight: float. Weight of the distance loss. Defaults to `1.0`.
        angle_weight: float. Weight of the angle loss. Defaults to `0.0`.
    """
    loss = 0.0
    if distance_weight:
        loss += distance_weight * relational_distance_loss(student, teacher)
    if angle_weight:
        loss += angle_weight * relational_angle_loss(student, teacher)
    return loss


RELATIONAL = {"rkd": rkd_loss, "similarity_kl": similarity_kl_loss}


def relational_loss(student, teacher, relational="rkd", distance_weight=1.0, angle_weight=0.0,
                    temperature=1.0):
    """The relational loss named `relational` (a key of `RELATIONAL`) of `student`
    towards `teacher`.

    Args:
        student: float tensor `(N, d)`.
        teacher: float tensor `(N, d')`.
        relational: str. `"rkd"` (distance and angle terms) or `"similarity_kl"`.
            Defaults to `"rkd"`.
        distance_weight: float. rkd: weight of the distance loss. Defaults to `1.0`.
        angle_weight: float. rkd: weight of the angle loss. Defaults to `0.0`.
        temperature: float. similarity_kl: softmax temperature. Defaults to `1.0`.
    """
    check_relational(relational)
    if relational == "similarity_kl":
        return similarity_kl_loss(student, teacher, temperature)
    return rkd_loss(student, teacher, distance_weight, angle_weight)


def check_relational(relational):
    if relational not in RELATIONAL:
        raise ValueError(f"`relational` must be one of {', '.join(RELATIONAL)}. "
                         f"Received: relational={relational!r}")


@keras.saving.register_keras_serializable(package="dmml_tf")
class RelationalLoss(keras.losses.Loss):
    """Keras wrapper of `relational_loss`: `y_true` is the teacher embedding, `y_pred`
    the student's.

    Args:
        relational: str. `"rkd"` or `"similarity_kl"`. Defaults to `"rkd"`.
        distance_weight: float. rkd: weight of the distance loss. Defaults to `1.0`.
        angle_weight: float. rkd: weight of the angle loss. Defaults to `0.0`.
        temperature: float. similarity_kl: softmax temperature. Defaults to `1.0`.
    """

    def __init__(self, relational="rkd", distance_weight=1.0, angle_weight=0.0, temperature=1.0,
                 name="relational", **kwargs):
        super().__init__(name=name, **kwargs)
        check_relational(relational)
        self.relational = relational
        self.distance_weight = distance_weight
        self.angle_weight = angle_weight
        self.temperature = temperature

    def call(self, y_true, y_pred):
        return relational_loss(y_pred, y_true, self.relational, self.distance_weight,
                               self.angle_weight, self.temperature)

    def get_config(self):
        return {**super().get_config(), "relational": self.relational,
                "distance_weight": self.distance_weight, "angle_weight": self.angle_weight,
                "temperature": self.temperature}
