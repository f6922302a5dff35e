"""Shared check: a loss's TensorFlow gradient against central finite differences."""

import numpy as np
import tensorflow as tf


def assert_gradient_matches_finite_differences(loss, x, entries, eps=1e-6, atol=1e-8):
    """Compare d loss(x) / d x[i, j] from the tape with (loss(x + eps) - loss(x - eps)) / 2eps.

    Args:
        loss: callable of one float64 array `(N, d)` returning a scalar tensor.
        x: float64 array `(N, d)`.
        entries: list of `(i, j)` to check.
    """
    variable = tf.Variable(x)
    with tf.GradientTape() as tape:
        value = loss(variable)
    grad = tape.gradient(value, variable).numpy()
    for i, j in entries:
        plus, minus = x.copy(), x.copy()
        plus[i, j] += eps
        minus[i, j] -= eps
        numeric = (loss(plus) - loss(minus)).numpy() / (2 * eps)
        np.testing.assert_allclose(grad[i, j], numeric, rtol=1e-4, atol=atol)
