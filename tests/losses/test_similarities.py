import numpy as np
import pytest
import tensorflow as tf

from dmml_tf.losses.similarities import (cosine_similarities, log1p_sum_exp, masked_logsumexp,
                                         reduce_terms, valid_pairs)


def test_cosine_similarities_normalise_both_sides():
    x = np.array([[3.0, 0.0], [1.0, 1.0]])
    y = np.array([[0.0, 2.0], [-5.0, 0.0], [2.0, 2.0]])
    expected = [[0.0, -1.0, 2 ** -0.5], [2 ** -0.5, -(2 ** -0.5), 1.0]]
    np.testing.assert_allclose(cosine_similarities(x, y).numpy(), expected, atol=1e-12)


def test_valid_pairs_keep_only_anchors_with_a_positive_and_a_negative():
    positives, negatives = valid_pairs(tf.constant([[0], [0], [1], [2]]))
    # Anchors 2 and 3 have no positive: neither their positives nor their negatives count.
    np.testing.assert_array_equal(positives.numpy(), [[0, 1, 0, 0], [1, 0, 0, 0], [0] * 4, [0] * 4])
    np.testing.assert_array_equal(negatives.numpy(), [[0, 0, 1, 1], [0, 0, 1, 1], [0] * 4, [0] * 4])


def test_masked_logsumexp_and_log1p_sum_exp_on_huge_and_empty_rows():
    logits = tf.Variable([[1000.0, 999.0, -5.0], [3.0, 4.0, 5.0]], dtype="float32")
    mask = tf.constant([[True, True, False], [False, False, False]])
    with tf.GradientTape(persistent=True) as tape:
        lse = masked_logsumexp(logits, mask)
        lse1p = log1p_sum_exp(logits, mask)
    np.testing.assert_allclose(lse.numpy(), [1000.0 + np.log1p(np.exp(-1.0)), 0.0], rtol=1e-6)
    np.testing.assert_allclose(lse1p.numpy(), lse.numpy(), rtol=1e-6)  # 1 is negligible here
    for value in (lse, lse1p):
        grad = tape.gradient(value, logits).numpy()
        assert np.all(np.isfinite(grad))
        np.testing.assert_array_equal(grad[1], 0.0)
        assert grad[0, 2] == 0.0
    np.testing.assert_allclose(log1p_sum_exp(tf.constant([[0.0, np.log(2.0)]]),
                                             tf.constant([[True, True]])).numpy(), [np.log(4.0)])


@pytest.mark.parametrize("reduction, expected", [("all", 4.0 / 3.0), ("nonzero", 2.0)])
def test_reduce_terms(reduction, expected):
    terms = tf.constant([3.0, 0.0, 1.0, 7.0])
    mask = tf.constant([True, True, True, False])
    assert float(reduce_terms(terms, mask, reduction)) == pytest.approx(expected)
    assert float(reduce_terms(terms, tf.zeros(4, tf.bool), reduction)) == 0.0
