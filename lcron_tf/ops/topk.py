"""Relaxed top-k membership from relaxed permutation matrices (pure TF).

``membership_i = sum_{r < k} P[b, r, i]``: the relaxed probability that item ``i``
is placed in the first ``k`` positions. LCRON normalises it by the detached column
sum of ``P`` (lcron_method.md §3.1, Eq. 10) and also needs the complementary mass in
rows ``k .. n-1`` ("down"), computed from those rows, not as ``1 - up``: the value
is the same, the gradient is not, because the normaliser is detached but not constant.
"""

from __future__ import annotations

import tensorflow as tf

from lcron_tf.ops import lean, sorting, validation

# The epsilon of the official code: added to every normaliser (and inside every log
# of the losses). -log(EPS) = 13.8155 caps each log term.
EPS = 1e-6

# impl="auto" uses the lean (no [B, N, N]) path when the static list size exceeds this,
# per relaxed sort. Set by measurement (`benchmarks/bench_loss.py --sections crossover`,
# benchmarks/RESULTS.md "impl crossover"): the whole loss forward + backward, dense vs lean,
# N = 10 .. 100, B = 1024 (2 stages) and B = 256 (3 stages), under XLA and in a plain
# tf.function. Lean is faster from N = 32 on in almost every series (at the paper's N = 40:
# 0.5-0.7x the dense time with NeuralSort, 0.6-0.7x with SoftSort, XLA); at N <= 24 dense is
# as fast or faster. The crossover did not depend on B or the number of stages beyond the
# measurement noise, so the rule depends on N only.
LEAN_MIN_LIST_SIZE = {"neural": 31, "soft": 31}


def resolve_impl(impl: str, sort: str, list_size: int | None) -> str:
    """``"dense"`` or ``"lean"`` for ``impl`` in ``("auto", "dense", "lean")``.

    ``"auto"`` picks ``"lean"`` when the static ``list_size`` exceeds
    ``LEAN_MIN_LIST_SIZE[sort]`` or is unknown, ``"dense"`` otherwise.

    Raises:
      ValueError: an unknown ``impl`` or ``sort``.
    """
    validation.check_choice("impl", impl, validation.IMPL_CHOICES)
    validation.check_choice("sort", sort, validation.SORT_CHOICES)
    if impl != "auto":
        return impl
    if list_size is None or list_size > LEAN_MIN_LIST_SIZE[sort]:
        return "lean"
    return "dense"


def relaxed_topk_membership(perm: tf.Tensor, k: int) -> tf.Tensor:
    """Sum of the first ``k`` rows of a relaxed permutation matrix.

    Args:
      perm: float ``[batch_size, list_size, list_size]`` (``[b, row, item]``).
      k: int, ``1 <= k <= list_size``.

    Returns:
      ``[batch_size, list_size]``, same dtype as ``perm``.
    """
    k = validation.check_k("k", k, perm.shape[1])
    return tf.reduce_sum(perm[:, :k, :], axis=1)


def neural_sort_topk_membership(
    scores: tf.Tensor, tau: float, k: int, mask: tf.Tensor | None = None
) -> tf.Tensor:
    """NeuralSort top-k membership from the first ``k`` rows only: O(N·k) memory, exact.

    Equal to ``relaxed_topk_membership(neural_sort(scores, tau, mask), k)``.

    Args:
      scores: float ``[batch_size, list_size]``.
      tau: temperature > 0.
      k: int, ``1 <= k <= list_size``.
      mask: optional 0/1 ``[batch_size, list_size]`` (padded items excluded).

    Returns:
      ``[batch_size, list_size]``, same dtype as ``scores`` (float32 for integer input).
    """
    k = validation.check_k("k", k, scores.shape[1])
    logits = sorting.neural_sort_logits(scores, tau, mask, num_rows=k)  # [B, k, N]
    rows = tf.nn.softmax(logits, axis=-1)
    rows = sorting._zero_invalid(rows, None if mask is None else tf.cast(mask, tf.bool))
    return tf.reduce_sum(rows, axis=1)


def normalized_up_down(
    scores: tf.Tensor,
    k: int,
    *,
    tau: float,
    sort: str,
    row_limit: tf.Tensor,
    col_mask: tf.Tensor,
    sort_mask: tf.Tensor | None = None,
    eps: float = EPS,
    impl: str = "auto",
) -> tuple[tf.Tensor, tf.Tensor]:
    """LCRON's normalised "up" (rows < k) and "down" (rows k .. row_limit-1) column masses.

    With ``P`` the relaxed permutation matrix of ``scores`` (``sort_mask`` chooses which
    items are sorted), ``Pm[b, r, i] = P[b, r, i] * 1[r < row_limit_b] * col_mask[b, i]`` and
    ``C = stop_gradient(sum_r Pm)``:

      ``up_i = sum_{r<k} Pm[r, i] / (C_i + eps)``,
      ``down_i = sum_{r>=k} Pm[r, i] / (C_i + eps)``.

    Args:
      scores: float ``[batch_size, list_size]``.
      k: int, ``1 <= k <= list_size``.
      tau: temperature > 0.
      sort: ``"neural"`` or ``"soft"``.
      row_limit: ``[batch_size]`` number of rows that count (the official code: the
        candidate count; masked mode: the number of valid items).
      col_mask: 0/1 ``[batch_size, list_size]`` columns that count.
      sort_mask: optional 0/1 ``[batch_size, list_size]`` items included in the sort
        (``None``: all items, as the official code).
      eps: the normaliser epsilon.
      impl: ``"dense"`` (materialise ``P``, ``[B, N, N]``: the reference), ``"lean"``
        (:mod:`lcron_tf.ops.lean`: NeuralSort by row chunks with recomputation, O(B N chunk)
        memory; SoftSort by one-sided scans, O(B N log N) time, O(B N) memory; equal to
        dense to rounding, values and gradients), or ``"auto"`` (lean when the static
        ``list_size`` exceeds ``LEAN_MIN_LIST_SIZE[sort]``, see :func:`resolve_impl`).

    Returns:
      ``(up, down)``, each ``[batch_size, list_size]`` in the dtype of ``scores``.

    Raises:
      ValueError: an unknown ``impl`` or ``sort``.
    """
    list_size = tf.convert_to_tensor(scores).shape[1]
    if resolve_impl(impl, sort, list_size) == "lean":
        return lean.normalized_up_down_lean(
            scores, k, tau=tau, sort=sort, row_limit=row_limit, col_mask=col_mask,
            sort_mask=sort_mask, eps=eps,
        )
    perm = sorting.relaxed_sort(scores, tau, sort, sort_mask)  # [B, N, N]
    dtype = perm.dtype
    n_rows = tf.shape(perm)[1]
    row_ok = tf.cast(
        tf.cast(tf.range(n_rows), dtype)[None, :] < tf.cast(row_limit, dtype)[:, None], dtype
    )  # [B, N]
    perm = perm * row_ok[:, :, None] * tf.cast(col_mask, dtype)[:, None, :]
    norm = tf.stop_gradient(tf.reduce_sum(perm, axis=1)) + eps  # [B, N]
    up = tf.reduce_sum(perm[:, :k, :], axis=1) / norm
    down = tf.reduce_sum(perm[:, k:, :], axis=1) / norm
    return up, down
