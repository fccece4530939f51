"""DinRanker's split attention MLP equals the MLP applied to the concatenated pairs."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from models_synth import make_schema

from lcron_tf.models import DinRanker


def _concat_reference(din: DinRanker, hist: tf.Tensor, cand: tf.Tensor) -> tf.Tensor:
    n, h = cand.shape[1], hist.shape[1]
    pairs = tf.concat(
        [tf.repeat(hist[:, None], n, axis=1), tf.repeat(cand[:, :, None], h, axis=2)], axis=-1
    )  # [B, N, H, 2d]
    return tf.squeeze(din.attention(pairs), axis=-1)


def test_split_attention_equals_concat_mlp_value_and_gradient() -> None:
    din = DinRanker(make_schema(), emb_dim=4, hidden_units=(8,), attention_units=6)
    rng = np.random.default_rng(0)
    hist = tf.constant(rng.normal(size=(3, 5, 4)))
    cand = tf.constant(rng.normal(size=(3, 7, 4)))
    hist32, cand32 = tf.cast(hist, tf.float32), tf.cast(cand, tf.float32)
    # Non-zero biases, so the bias placement is checked too.
    for v in din.attention.weights:
        v.assign(tf.random.stateless_normal(v.shape, seed=[1, v.shape.rank]))
    weights = tf.constant(rng.normal(size=(3, 7, 5)), tf.float32)
    grads = []
    for fn in (din.attention_logits, lambda a, b: _concat_reference(din, a, b)):
        with tf.GradientTape() as tape:
            tape.watch([hist32, cand32])
            out = fn(hist32, cand32)
            total = tf.reduce_sum(out * weights)
        assert out.shape == (3, 7, 5)
        grads.append([out, *tape.gradient(total, [hist32, cand32, *din.attention.weights])])
    for got, want in zip(*grads):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
