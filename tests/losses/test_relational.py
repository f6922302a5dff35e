import numpy as np
import pytest
import tensorflow as tf

from dmml_tf.losses.relational import (RelationalLoss, relational_angle_loss,
                                       relational_distance_loss, relational_loss,
                                       similarity_kl_loss)
from tests.losses.finite_differences import assert_gradient_matches_finite_differences


def huber(e):
    e = abs(e)
    return 0.5 * e * e if e < 1 else e - 0.5


def reference_angle(student, teacher):
    """Triple loop over distinct (i, j, k): cosine of the angle at i between j and k."""
    n = len(student)

    def cosine(u, i, j, k):
        a, b = u[j] - u[i], u[k] - u[i]
        return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))

    errors = [huber(cosine(student, i, j, k) - cosine(teacher, i, j, k))
              for i in range(n) for j in range(n) for k in range(n) if len({i, j, k}) == 3]
    return float(np.mean(errors))


def reference_relational(student, teacher):
    """Double loop over ordered pairs i != j, exactly as docs/method.md writes it."""
    n = len(student)

    def normalized(u):
        d = np.zeros((n, n))
        for i in range(n):
            for j in range(n):
                d[i, j] = np.linalg.norm(u[i] - u[j])
        return d / (d.sum() / (n * (n - 1)))

    ds, dt = normalized(student), normalized(teacher)
    total = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                total += huber(ds[i, j] - dt[i, j])
    return total / (n * (n - 1))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("scale", [1.0, 3.0], ids=["small_errors", "large_errors"])
def test_matches_loop_reference(seed, scale):
    rng = np.random.default_rng(seed)
    student = rng.normal(size=(7, 4))
    teacher = rng.normal(size=(7, 6)) ** 3 * scale  # uneven distances -> |error| > 1 too
    got = relational_distance_loss(student, teacher).numpy()
    np.testing.assert_allclose(got, reference_relational(student, teacher), rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("scale", [1.0, 3.0], ids=["small_errors", "large_errors"])
def test_angle_matches_loop_reference(seed, scale):
    rng = np.random.default_rng(seed)
    student = rng.normal(size=(6, 4))
    teacher = rng.normal(size=(6, 5)) ** 3 * scale
    got = relational_angle_loss(student, teacher).numpy()
    expected = reference_angle(student, teacher)
    assert expected > 0.01
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_weighted_sum_of_distance_and_angle():
    rng = np.random.default_rng(2)
    student, teacher = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    expected = 2.0 * reference_relational(student, teacher) + 0.5 * reference_angle(student, teacher)
    np.testing.assert_allclose(relational_loss(student, teacher, "rkd", 2.0, 0.5).numpy(),
                               expected, rtol=1e-6)
    wrapper = RelationalLoss.from_config(RelationalLoss("rkd", 2.0, 0.5).get_config())
    np.testing.assert_allclose(wrapper(teacher, student).numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("loss", [relational_distance_loss, relational_angle_loss],
                         ids=["distance", "angle"])
def test_zero_for_a_scaled_copy(loss):
    x = np.random.default_rng(0).normal(size=(6, 3))
    assert loss(x, 2.5 * x).numpy() == pytest.approx(0.0, abs=1e-7)


def reference_similarity_kl(student, teacher, temperature):
    """mean_i sum_{j != i} p_t log(p_t / p_s), softmax over j != i of cos / T, by loops."""
    def distribution(u, i):
        cosines = [u[i] @ u[j] / (np.linalg.norm(u[i]) * np.linalg.norm(u[j]))
                   for j in range(len(u)) if j != i]
        e = np.exp(np.array(cosines) / temperature)
        return e / e.sum()

    rows = []
    for i in range(len(student)):
        p_t, p_s = distribution(teacher, i), distribution(student, i)
        rows.append(sum(t * np.log(t / s) for t, s in zip(p_t, p_s)))
    return np.mean(rows)


@pytest.mark.parametrize("temperature", [1.0, 0.1], ids=["T1", "T0.1"])
def test_similarity_kl_matches_loop_reference(temperature):
    rng = np.random.default_rng(3)
    student, teacher = rng.normal(size=(7, 4)), rng.normal(size=(7, 6))
    expected = reference_similarity_kl(student, teacher, temperature)
    assert expected > 1e-3
    np.testing.assert_allclose(similarity_kl_loss(student, teacher, temperature).numpy(), expected,
                               rtol=1e-6)
    np.testing.assert_allclose(
        relational_loss(student, teacher, "similarity_kl", temperature=temperature).numpy(),
        expected, rtol=1e-6)
    wrapper = RelationalLoss.from_config(
        RelationalLoss("similarity_kl", temperature=temperature).get_config())
    np.testing.assert_allclose(wrapper(teacher, student).numpy(), expected, rtol=1e-5)


def test_similarity_kl_is_zero_for_the_same_directions():
    x = np.random.default_rng(0).normal(size=(6, 3))
    assert similarity_kl_loss(x, 3.0 * x, 0.5).numpy() == pytest.approx(0.0, abs=1e-7)


def test_unknown_relational_names_the_choices():
    with pytest.raises(ValueError, match="rkd, similarity_kl. Received: relational='kl'"):
        relational_loss(np.ones((3, 2)), np.ones((3, 2)), "kl")


LOSSES = [relational_distance_loss, relational_angle_loss,
          lambda student, teacher: similarity_kl_loss(student, teacher, 0.5)]
LOSS_IDS = ["distance", "angle", "similarity_kl"]


@pytest.mark.parametrize("loss", LOSSES, ids=LOSS_IDS)
def test_teacher_receives_zero_gradient_and_student_nonzero(loss):
    rng = np.random.default_rng(1)
    student = tf.Variable(rng.normal(size=(5, 3)))
    teacher = tf.Variable(rng.normal(size=(5, 3)))
    with tf.GradientTape() as tape:
        loss = loss(student, teacher)
    grad_student, grad_teacher = tape.gradient(loss, [student, teacher])
    assert grad_teacher is None
    assert np.all(np.isfinite(grad_student.numpy()))
    assert np.abs(grad_student.numpy()).sum() > 0


@pytest.mark.parametrize("loss", LOSSES, ids=LOSS_IDS)
def test_student_gradient_matches_finite_differences(loss):
    rng = np.random.default_rng(4)
    x, teacher = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    assert_gradient_matches_finite_differences(lambda student: loss(student, teacher), x,
                                               [(0, 0), (2, 1), (4, 2)])


@pytest.mark.parametrize("loss", LOSSES, ids=LOSS_IDS)
def test_duplicate_rows_give_finite_values_and_gradients(loss):
    """The sampler repeats images to fill short classes: identical rows, distance 0 and
    an undefined angle between them, must not give NaN."""
    rng = np.random.default_rng(5)
    rows = rng.normal(size=(4, 3))
    student = tf.Variable(rows[[0, 0, 1, 2, 2, 3]])  # rows 0 and 1, 3 and 4 identical
    teacher = tf.constant(rng.normal(size=(4, 3))[[0, 0, 1, 2, 2, 3]])
    with tf.GradientTape() as tape:
        value = loss(student, teacher)
    gradient = tape.gradient(value, student).numpy()
    assert np.isfinite(value.numpy()) and value.numpy() > 0
    assert np.all(np.isfinite(gradient)) and np.abs(gradient).sum() > 0
