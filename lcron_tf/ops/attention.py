"""The hidden layer of DIN's target attention, without the ``[B, N, H, U]`` tensor.

DIN scores every (candidate ``n``, history item ``h``) pair with an MLP
``w . relu(W [hist_h ‖ cand_n] + b)``. With the first kernel split into ``[W_h; W_c]`` the
pre-activation is ``a_bhu + c_bnu`` (``a = hist W_h``, ``c = cand W_c + b``), and the logit is
the sum of ``U`` hinges::

    hinge_logits(a, c, w)[b, n, h] = sum_u w_u * relu(a[b, h, u] + c[b, n, u])

That is ``B N H U`` elements (164 M at the paper size B = 1024, N = 40, H = 50, U = 80), far
more than anything else in the model. Left to autodiff, both TF's kernels and XLA:CPU
materialise several ``[B, N, H, U]`` float32 tensors (655 MB each at that size) forward and
backward. :func:`hinge_logits` instead loops over ``u`` (one ``[B, N, H]`` slice at a time,
which stays in cache) with a hand-written gradient that recomputes the pre-activation::

    d a[b, h, u] = sum_n g[b, n, h] w_u [pre > 0]     d c[b, n, u] = sum_h (same)
    d w_u = sum_{b, n, h} g[b, n, h] relu(pre)

The loop is unrolled in a graph (TF kernels) and a ``tf.while_loop`` under XLA (where the
unrolled form compiles into many separate passes). Same values as the direct form to float
rounding (tested in float64, gradients against finite differences); the subgradient of relu
at 0 is 0, as ``tf.nn.relu``'s. Inputs in float16/bfloat16 are computed in float32.
"""

from __future__ import annotations

import tensorflow as tf

UNROLL_MAX_UNITS = 256
"""Largest U whose loop is unrolled outside XLA (a ``tf.while_loop`` above)."""


def _in_xla_context() -> bool:
    """Whether the graph being traced is compiled by XLA (``jit_compile=True``)."""
    try:
        from tensorflow.python.ops import control_flow_util

        return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))
    except (ImportError, AttributeError):  # pragma: no cover - internal API moved
        return False


@tf.custom_gradient
def _hinge(at: tf.Tensor, ct: tf.Tensor, w: tf.Tensor):
    """``at`` [U, B, H], ``ct`` [U, B, N], ``w`` [U] -> [B, N, H] (float32 or float64)."""
    units = at.shape[0]
    if _in_xla_context() or units > UNROLL_MAX_UNITS:
        return _hinge_while(at, ct, w)
    # Unrolled: one [B, N, H] slice per unit (stays in cache), views made once.
    a_u = tf.unstack(at[:, :, None, :])  # U x [B, 1, H]
    c_u = tf.unstack(ct[:, :, :, None])  # U x [B, N, 1]
    w_u = tf.unstack(w)
    out = tf.nn.relu(c_u[0] + a_u[0]) * w_u[0]
    for u in range(1, units):
        out += tf.nn.relu(c_u[u] + a_u[u]) * w_u[u]

    def grad(g: tf.Tensor):
        zero = tf.zeros([], g.dtype)
        da, dc, dw = [], [], []
        for u in range(units):
            pre = c_u[u] + a_u[u]  # [B, N, H]
            gm = tf.where(pre > 0, g * w_u[u], zero)
            da.append(tf.reduce_sum(gm, 1))
            dc.append(tf.reduce_sum(gm, 2))
            dw.append(tf.reduce_sum(tf.nn.relu(pre) * g))
        return tf.stack(da), tf.stack(dc), tf.stack(dw)

    return out, grad


def _hinge_while(at: tf.Tensor, ct: tf.Tensor, w: tf.Tensor):
    """:func:`_hinge` as ``tf.while_loop`` s (XLA compiles the unrolled form into many passes)."""
    units = at.shape[0]
    shape = tf.stack([tf.shape(ct)[1], tf.shape(ct)[2], tf.shape(at)[2]])

    def forward(u: tf.Tensor, acc: tf.Tensor) -> tuple:
        return u + 1, acc + w[u] * tf.nn.relu(ct[u][:, :, None] + at[u][:, None, :])

    _, out = tf.while_loop(lambda u, acc: u < units, forward,
                           (tf.constant(0), tf.zeros(shape, at.dtype)))

    def grad(g: tf.Tensor):
        zero = tf.zeros([], g.dtype)

        def backward(u: tf.Tensor, da: tf.TensorArray, dc: tf.TensorArray,
                     dw: tf.TensorArray) -> tuple:
            pre = ct[u][:, :, None] + at[u][:, None, :]  # [B, N, H]
            gm = tf.where(pre > 0, g * w[u], zero)
            return (u + 1, da.write(u, tf.reduce_sum(gm, 1)), dc.write(u, tf.reduce_sum(gm, 2)),
                    dw.write(u, tf.reduce_sum(tf.nn.relu(pre) * g)))

        arrays = tuple(tf.TensorArray(g.dtype, size=units) for _ in range(3))
        _, da, dc, dw = tf.while_loop(lambda u, *s: u < units, backward, (0, *arrays))
        return da.stack(), dc.stack(), dw.stack()

    return out, grad


def hinge_logits(a: tf.Tensor, c: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
    """``sum_u w_u relu(a[b, h, u] + c[b, n, u])`` for every (b, n, h), memory-lean.

    Args:
      a: float ``[B, H, U]`` (history part of the pre-activation).
      c: float ``[B, N, U]`` (candidate part, bias included).
      w: float ``[U]`` (the output layer's kernel).

    Returns:
      ``[B, N, H]`` in the dtype of ``a`` (computed in float32 for 16-bit inputs).

    Raises:
      ValueError: ``U`` not static or not the same in ``a``, ``c`` and ``w``.
    """
    a, c, w = tf.convert_to_tensor(a), tf.convert_to_tensor(c), tf.convert_to_tensor(w)
    units = a.shape[-1]
    if units is None or c.shape[-1] != units or w.shape[-1] != units or w.shape.rank != 1:
        raise ValueError(
            f"`a` [B, H, U], `c` [B, N, U] and `w` [U] need the same static U. Received: "
            f"{a.shape}, {c.shape}, {w.shape}"
        )
    dtype = a.dtype
    inner = tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype
    at = tf.transpose(tf.cast(a, inner), [2, 0, 1])  # [U, B, H]
    ct = tf.transpose(tf.cast(c, inner), [2, 0, 1])  # [U, B, N]
    return tf.cast(_hinge(at, ct, tf.cast(w, inner)), dtype)
