"""The padding rules of lcron_tf, declared once (pure TF).

A candidate list is ``[batch_size, list_size]`` with a 0/1 ``mask`` (1 = real candidate,
0 = padded slot). Every op of the package excludes padded entries through the helpers of
this module, always with ``tf.where`` and never by multiplying by the mask: a padded slot may
hold ``-inf``, ``+inf`` or NaN (masking with ``-inf`` is a common habit), and ``inf * 0`` is
NaN, in the value and in the gradient.

* :func:`valid_mask` parses a mask into a bool tensor and rejects values outside {0, 1};
* :func:`where_valid` replaces padded entries by a constant (the value *and* the gradient of
  the padded entries are then exactly independent of what they held);
* :func:`padded_last_key` builds a finite sort key that puts padded entries after every valid
  one, for the ops that need a sorted *value* (SoftSort's sorted scores, IDCG's sorted labels).
  Hard rankings that only need an *order* use :func:`lcron_tf.ops.ranking.descending_order`,
  which needs no sentinel value at all.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def valid_mask(mask: tf.Tensor, name: str = "mask") -> tf.Tensor:
    """``mask`` as a bool tensor (True = real candidate), after checking its values.

    Accepted: bool, or numbers that are exactly 0 or 1. Values are checked where they can
    be: a mask whose values are known when the op is built (eager tensors, constants)
    raises ``ValueError``; in a graph, a ``tf.debugging.Assert`` raises
    ``InvalidArgumentError`` when the step runs. Inside XLA-compiled functions TensorFlow
    drops runtime asserts; there every non-zero value counts as a real candidate.

    Args:
      mask: bool or numeric ``[batch_size, list_size]``.
      name: the argument's name, for error messages.

    Returns:
      bool ``[batch_size, list_size]``.

    Raises:
      ValueError: a value outside {0, 1} known at build time.
    """
    mask = tf.convert_to_tensor(mask)
    if mask.dtype == tf.bool:
        return mask
    static = tf.get_static_value(mask)
    if static is not None:
        bad = ~((static == 0) | (static == 1))
        if np.any(bad):
            raise ValueError(
                f"`{name}` must hold only 0 (padded slot) or 1 (real candidate). "
                f"Received: {name} with value {np.asarray(static)[bad].ravel()[0]!r}"
            )
        return tf.not_equal(mask, tf.zeros_like(mask))
    ok = tf.reduce_all((mask == tf.zeros_like(mask)) | (mask == tf.ones_like(mask)))
    message = f"`{name}` must hold only 0 (padded slot) or 1 (real candidate)"
    check = tf.debugging.Assert(ok, [message])
    with tf.control_dependencies([check]):
        return tf.not_equal(mask, tf.zeros_like(mask))


def where_valid(x: tf.Tensor, valid: tf.Tensor, fill: float = 0.0) -> tf.Tensor:
    """``x`` with every padded entry replaced by ``fill`` (``tf.where``: no NaN leaks).

    The gradient with respect to a padded entry of ``x`` is exactly 0, whatever it held.

    Args:
      x: ``[batch_size, list_size, ...]`` tensor.
      valid: bool ``[batch_size, list_size]`` (or broadcastable to ``x``).
      fill: the replacement value.

    Returns:
      Same shape and dtype as ``x``.
    """
    x = tf.convert_to_tensor(x)
    valid = tf.convert_to_tensor(valid)
    if valid.shape.rank is not None and x.shape.rank is not None:
        for _ in range(x.shape.rank - valid.shape.rank):
            valid = valid[..., None]
    return tf.where(valid, x, tf.constant(fill, x.dtype))


def padded_last_key(scores: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """A finite key equal to ``scores`` on valid entries and below all of them on padded ones.

    Padded entries get ``min(valid scores of the row) - 1`` (detached; 0 for a row with no
    valid entry). The key depends on no padded value. For huge magnitudes the ``- 1`` may be
    absorbed by rounding: the padded key then *equals* the smallest valid score, which leaves
    every sorted value unchanged (ops that need an order, not values, use
    :func:`lcron_tf.ops.ranking.descending_order`).

    Args:
      scores: float ``[batch_size, list_size]`` (finite on valid entries).
      valid: bool ``[batch_size, list_size]``.

    Returns:
      ``[batch_size, list_size]`` in the dtype of ``scores``.
    """
    scores = tf.convert_to_tensor(scores)
    big = tf.constant(np.finfo(scores.dtype.as_numpy_dtype).max, scores.dtype)
    low = tf.reduce_min(tf.where(valid, scores, big), axis=-1, keepdims=True)
    low = tf.where(tf.reduce_any(valid, axis=-1, keepdims=True), low, tf.zeros_like(low))
    return tf.where(valid, scores, tf.stop_gradient(low - 1.0))


def count_valid(valid: tf.Tensor, dtype: tf.DType = tf.float32) -> tf.Tensor:
    """Number of real candidates per request: ``[batch_size]`` in ``dtype``."""
    return tf.reduce_sum(tf.cast(valid, dtype), axis=-1)


__all__ = ["count_valid", "padded_last_key", "valid_mask", "where_valid"]
