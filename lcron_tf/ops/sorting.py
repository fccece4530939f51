"""Relaxed (differentiable) sorting operators: NeuralSort and SoftSort (pure TF).

Conventions (as in lcron_method.md §2 and the official LCRON code):
the relaxed permutation matrix ``P`` has shape ``[batch_size, list_size, list_size]``
and index ``P[b, r, i]``: row ``r`` is the ``r``-th position in *descending*
order, column ``i`` is the item. Each row is a softmax over items and sums to 1;
columns are not normalised.

Both operators accept an optional ``mask`` (``[batch_size, list_size]``, 1 = real
candidate). Without a mask every item takes part in the sort (the official code's
behaviour: padded items are sorted too). With a mask, padded items are excluded:
their columns are exactly 0, rows ``r >= n_valid`` are exactly 0, and the first
``n_valid`` rows equal the operator applied to the valid items alone.

References:
  Grover, Wang, Zweig, Ermon. "Stochastic Optimization of Sorting Networks via
  Continuous Relaxations" (NeuralSort), ICLR 2019.
  Prillo, Eisenschlos. "SoftSort: A Continuous Relaxation for the argsort
  Operator", ICML 2020.
"""

from __future__ import annotations

import tensorflow as tf

from lcron_tf.ops import validation

# Logit given to excluded (padded) items. Finite on purpose: -inf turns a fully
# padded row into NaN inside softmax; -1e30 underflows exp() to exactly 0 in
# float32 and float64 while staying finite.
MASKED_LOGIT = -1e30


def _prepare(
    scores: tf.Tensor, mask: tf.Tensor | None, name: str
) -> tuple[tf.Tensor, tf.Tensor | None]:
    scores = tf.convert_to_tensor(scores)
    validation.check_rank2(name, scores)
    if not scores.dtype.is_floating:
        scores = tf.cast(scores, tf.float32)
    if mask is not None:
        mask = tf.convert_to_tensor(mask)
        validation.check_rank2("mask", mask)
        validation.check_same_shape(name, scores, "mask", mask)
        mask = tf.cast(mask, tf.bool)
    return scores, mask


def abs_diff_row_sums(scores: tf.Tensor, mask: tf.Tensor | None = None) -> tf.Tensor:
    """``b_j = sum_l m_l * |s_j - s_l|`` for every item ``j`` (dense, O(N^2) work, no matmul).

    Args:
      scores: float ``[batch_size, list_size]``.
      mask: optional bool/0-1 ``[batch_size, list_size]``; items with 0 are left out of the sum.

    Returns:
      ``[batch_size, list_size]`` in the dtype of ``scores``.
    """
    scores, mask = _prepare(scores, mask, "scores")
    diff = tf.abs(scores[:, :, None] - scores[:, None, :])  # [B, N, N]
    if mask is not None:
        diff = diff * tf.cast(mask, scores.dtype)[:, None, :]
    return tf.reduce_sum(diff, axis=-1)


def neural_sort_logits(
    scores: tf.Tensor, tau: float, mask: tf.Tensor | None = None, num_rows: int | None = None
) -> tf.Tensor:
    """Row logits of NeuralSort, ``((n + 1 - 2r) s_i - b_i) / tau`` for rows ``r = 1..num_rows``.

    Args:
      scores: float ``[batch_size, list_size]``.
      tau: temperature > 0.
      mask: optional ``[batch_size, list_size]``; with a mask ``n`` is the per-request
        number of valid items and padded items get ``MASKED_LOGIT``.
      num_rows: compute only the first ``num_rows`` rows (default: all ``list_size``).

    Returns:
      ``[batch_size, num_rows, list_size]`` logits in the dtype of ``scores``.
    """
    scores, mask = _prepare(scores, mask, "scores")
    tau = validation.check_positive("tau", tau)
    dtype = scores.dtype
    n_items = tf.shape(scores)[1]
    rows = n_items if num_rows is None else num_rows
    r = tf.cast(tf.range(1, rows + 1), dtype)  # [R]
    b = abs_diff_row_sums(scores, mask)  # [B, N]
    if mask is None:
        n = tf.cast(n_items, dtype)
        scaling = (n + 1.0 - 2.0 * r)[None, :]  # [1, R]
    else:
        n = tf.reduce_sum(tf.cast(mask, dtype), axis=1, keepdims=True)  # [B, 1]
        scaling = n + 1.0 - 2.0 * r[None, :]  # [B, R]
    logits = (scaling[:, :, None] * scores[:, None, :] - b[:, None, :]) / tau  # [B, R, N]
    if mask is not None:
        logits = tf.where(mask[:, None, :], logits, tf.constant(MASKED_LOGIT, dtype))
    return logits


def _zero_invalid(perm: tf.Tensor, mask: tf.Tensor | None) -> tf.Tensor:
    """Zero padded columns and the rows ``r >= n_valid`` of a ``[B, R, N]`` matrix."""
    if mask is None:
        return perm
    dtype = perm.dtype
    m = tf.cast(mask, dtype)
    n = tf.reduce_sum(m, axis=1, keepdims=True)  # [B, 1]
    rows = tf.cast(tf.range(tf.shape(perm)[1]), dtype)[None, :]  # [1, R]
    row_ok = tf.cast(rows < n, dtype)  # [B, R]
    return perm * row_ok[:, :, None] * m[:, None, :]


def neural_sort(scores: tf.Tensor, tau: float, mask: tf.Tensor | None = None) -> tf.Tensor:
    """NeuralSort relaxed permutation matrix.

    ``P[b, r, i] = softmax_i(((n + 1 - 2r) s_i - sum_l |s_i - s_l|) / tau)``, ``r = 1..n``.
    The row sums of ``|s_i - s_l|`` are a plain reduction (O(N^2)), not the O(N^3)
    matmul with a ones matrix of the original code.

    Args:
      scores: float32/float64 ``[batch_size, list_size]``.
      tau: temperature > 0 (LCRON uses 50 for model scores).
      mask: optional 0/1 ``[batch_size, list_size]``; see the module docstring.

    Returns:
      ``[batch_size, list_size, list_size]`` in the dtype of ``scores``.
    """
    logits = neural_sort_logits(scores, tau, mask)
    perm = tf.nn.softmax(logits, axis=-1)
    return _zero_invalid(perm, None if mask is None else tf.cast(mask, tf.bool))


def soft_sort(scores: tf.Tensor, tau: float, mask: tf.Tensor | None = None) -> tf.Tensor:
    """SoftSort relaxed permutation matrix (p = 1).

    ``P[b, r, i] = softmax_i(-|sort_desc(s)_r - s_i| / tau)``. The gradient flows
    through both the sorted values and ``s``.

    Args:
      scores: float32/float64 ``[batch_size, list_size]``.
      tau: temperature > 0.
      mask: optional 0/1 ``[batch_size, list_size]``; see the module docstring.

    Returns:
      ``[batch_size, list_size, list_size]`` in the dtype of ``scores``.
    """
    scores, mask = _prepare(scores, mask, "scores")
    tau = validation.check_positive("tau", tau)
    dtype = scores.dtype
    if mask is None:
        sorted_scores = tf.sort(scores, axis=-1, direction="DESCENDING")
    else:
        # Padded items go last: give them a value below every valid score.
        floor = tf.stop_gradient(tf.reduce_min(scores, axis=-1, keepdims=True) - 1.0)
        sorted_scores = tf.sort(tf.where(mask, scores, floor), axis=-1, direction="DESCENDING")
    logits = -tf.abs(sorted_scores[:, :, None] - scores[:, None, :]) / tau  # [B, N, N]
    if mask is not None:
        logits = tf.where(mask[:, None, :], logits, tf.constant(MASKED_LOGIT, dtype))
    perm = tf.nn.softmax(logits, axis=-1)
    return _zero_invalid(perm, mask)


def relaxed_sort(
    scores: tf.Tensor, tau: float, sort: str = "neural", mask: tf.Tensor | None = None
) -> tf.Tensor:
    """Dispatch to :func:`neural_sort` (``sort="neural"``) or :func:`soft_sort` (``"soft"``).

    Shapes and dtypes as in those functions.
    """
    validation.check_choice("sort", sort, validation.SORT_CHOICES)
    return (neural_sort if sort == "neural" else soft_sort)(scores, tau, mask)
