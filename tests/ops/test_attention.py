"""hinge_logits equals the direct ReLU-MLP form, in value and gradient, eager and under XLA."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from lcron_tf.ops import attention


def direct(a, c, w):
    return tf.einsum("bnhu,u->bnh", tf.nn.relu(c[:, :, None, :] + a[:, None, :, :]), w)


def inputs(dtype, b=3, n=4, h=5, u=6, seed=0):
    rng = np.random.default_rng(seed)
    return [tf.constant(rng.normal(size=s), dtype) for s in ((b, h, u), (b, n, u), (u,))]


@pytest.mark.parametrize("xla", [False, True])
@pytest.mark.parametrize("units", [6, attention.UNROLL_MAX_UNITS + 3])
def test_value_and_gradient_equal_the_direct_form(xla, units):
    a, c, w = inputs(tf.float64, u=units)
    g = tf.constant(np.random.default_rng(1).normal(size=(3, 4, 5)))

    def run(fn):
        with tf.GradientTape() as tape:
            tape.watch([a, c, w])
            out = fn(a, c, w)
            total = tf.reduce_sum(out * g)
        return [out, *tape.gradient(total, [a, c, w])]

    got = tf.function(lambda: run(attention.hinge_logits), jit_compile=xla)()
    want = run(direct)
    for x, y in zip(got, want):
        np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-11, atol=1e-11)


def test_gradient_matches_finite_differences_float64():
    a, c, w = inputs(tf.float64, b=2, n=3, h=4, u=5, seed=2)
    theo, numer = tf.test.compute_gradient(attention.hinge_logits, [a, c, w])
    for t, nu in zip(theo, numer):
        np.testing.assert_allclose(t, nu, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_low_precision_inputs_compute_in_float32(dtype):
    a, c, w = inputs(tf.float32)
    out = attention.hinge_logits(tf.cast(a, dtype), tf.cast(c, dtype), tf.cast(w, dtype))
    assert out.dtype == dtype
    want = direct(*(tf.cast(tf.cast(x, dtype), tf.float32) for x in (a, c, w)))
    np.testing.assert_allclose(tf.cast(out, tf.float32).numpy(), want.numpy(), rtol=2e-2,
                               atol=2e-2)


def test_shape_errors_name_the_inputs():
    a, c, w = inputs(tf.float32)
    with pytest.raises(ValueError, match="same static U"):
        attention.hinge_logits(a, c[..., :3], w)
