import numpy as np
import pytest
import tensorflow as tf

from dmml_tf.losses.relational import relational_distance_loss


def reference_relational(student, teacher):
    """Double loop over ordered pairs i != j, exactly as DESIGN.md §1 writes it."""
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
                e = abs(ds[i, j] - dt[i, j])
                total += 0.5 * e * e if e < 1 else e - 0.5
    return total / (n * (n - 1))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("scale", [1.0, 3.0], ids=["small_errors", "large_errors"])
def test_matches_loop_reference(seed, scale):
    rng = np.random.default_rng(seed)
    student = rng.normal(size=(7, 4))
    teacher = rng.normal(size=(7, 6)) ** 3 * scale  # uneven distances -> |error| > 1 too
    got = relational_distance_loss(student, teacher).numpy()
    np.testing.assert_allclose(got, reference_relational(student, teacher), rtol=1e-6)


def test_zero_for_a_scaled_copy():
    x = np.random.default_rng(0).normal(size=(6, 3))
    assert relational_distance_loss(x, 2.5 * x).numpy() == pytest.approx(0.0, abs=1e-7)


def test_teacher_receives_zero_gradient_and_student_nonzero():
    rng = np.random.default_rng(1)
    student = tf.Variable(rng.normal(size=(5, 3)))
    teacher = tf.Variable(rng.normal(size=(5, 3)))
    with tf.GradientTape() as tape:
        loss = relational_distance_loss(student, teacher)
    grad_student, grad_teacher = tape.gradient(loss, [student, teacher])
    assert grad_teacher is None
    assert np.abs(grad_student.numpy()).sum() > 0
