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

from lcron_tf.ops import masking, validation

# Logit given to excluded (padded) items. Finite on purpose: -inf turns a fully
# padded row into NaN inside softmax; -1e30 underflows exp() to exactly 0 in
# float32 and float64 while staying finite.
MASKED_LOGIT = -1e30


def _prepare(
    scores: tf.Tensor, mask: tf.Tensor | None, name: str, sanitize: bool = True
) -> tuple[tf.Tensor, tf.Tensor | None]:
    scores = tf.convert_to_tensor(scores)
    validation.check_rank2(name, scores)
    if not scores.dtype.is_floating:
        scores = tf.cast(scores, tf.float32)
    if mask is not None:
        mask = tf.convert_to_tensor(mask)
        validation.check_rank2("mask", mask)
        validation.check_same_shape(name, scores, "mask", mask)
        mask = masking.valid_mask(mask)
        if sanitize:  # padded slots may hold anything (-inf, NaN): nothing below sees them
            scores = masking.where_valid(scores, mask)
    return scores, mask


def abs_diff_row_sums(scores: tf.Tensor, mask: tf.Tensor | None = None) -> tf.Tensor:
    """``b_j = sum_l m_l * |s_j - s_l|`` for every item ``j`` (dense, O(N^2) work, no matmul).

    Args:
      scores: float ``[batch_size, list_size]`` (finite: the relaxed sorts replace padded
        scores before calling this).
      mask: optional bool/0-1 ``[batch_size, list_size]``; items with 0 are left out of the sum
        (their own ``b`` is still computed).

    Returns:
      ``[batch_size, list_size]`` in the dtype of ``scores``.
    """
    scores, mask = _prepare(scores, mask, "scores", sanitize=False)
    diff = tf.abs(scores[:, :, None] - scores[:, None, :])  # [B, N, N]
    if mask is not None:
        diff = masking.where_valid(diff, mask[:, None, :])
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
    tau = validation.check_tau("tau", tau)
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
    """Zero padded columns and the rows ``r >= n_valid`` of a ``[B, R, N]`` matrix (tf.where)."""
    if mask is None:
        return perm
    mask = tf.cast(mask, tf.bool)
    n = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1, keepdims=True)  # [B, 1]
    row_ok = tf.range(tf.shape(perm)[1])[None, :] < n  # [B, R]
    keep = row_ok[:, :, None] & mask[:, None, :]
    return tf.where(keep, perm, tf.zeros_like(perm))


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
    tau = validation.check_tau("tau", tau)
    dtype = scores.dtype
    if mask is None:
        sorted_scores = tf.sort(scores, axis=-1, direction="DESCENDING")
    else:
        # Padded items go last (their rows are zeroed below).
        key = masking.padded_last_key(scores, mask)
        sorted_scores = tf.sort(key, axis=-1, direction="DESCENDING")
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


def _unsort(x_sorted: tf.Tensor, inverse: tf.Tensor) -> tf.Tensor:
    """Gather ``[B, N]`` values from sorted order back to item order (``inverse`` = ranks)."""
    return tf.gather(x_sorted, inverse, batch_dims=1)


def _inverse_permutation(order: tf.Tensor) -> tf.Tensor:
    """``inverse[b, order[b, m]] = m`` for an int32 ``[B, N]`` batch of permutations (O(N))."""
    shape = tf.shape(order)
    batch = tf.broadcast_to(tf.range(shape[0])[:, None], shape)
    positions = tf.broadcast_to(tf.range(shape[1])[None, :], shape)
    return tf.scatter_nd(tf.stack([batch, order], axis=-1), positions, shape)


def _tie_group_sums(
    t_sorted: tf.Tensor, values: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Sums of ``values`` over items strictly above / strictly below each sorted position.

    Args:
      t_sorted: ``[B, N]`` scores sorted in descending order.
      values: ``[B, N, V]`` per-position values (sorted order).

    Returns:
      ``(above, below)``, each ``[B, N, V]``: ``above[b, m] = sum of values at positions p
      with t[p] > t[m]``, ``below`` likewise with ``t[p] < t[m]`` (tied positions excluded).
    """
    shape = tf.shape(t_sorted)
    n_b, n_n = shape[0], shape[1]
    first = tf.ones([n_b, 1], tf.int32)
    is_start = tf.concat([first, tf.cast(t_sorted[:, 1:] != t_sorted[:, :-1], tf.int32)], axis=1)
    gid = tf.cumsum(is_start, axis=1) - 1  # [B, N] tie group id, non-decreasing
    seg = gid + tf.range(n_b)[:, None] * n_n
    n_v = tf.shape(values)[2]
    group = tf.math.unsorted_segment_sum(
        tf.reshape(values, [-1, n_v]), tf.reshape(seg, [-1]), n_b * n_n
    )
    group = tf.reshape(group, [n_b, n_n, n_v])  # [B, G=N, V] (unused groups are 0)
    above_g = tf.cumsum(group, axis=1, exclusive=True)
    total = tf.reduce_sum(group, axis=1, keepdims=True)
    below_g = total - above_g - group
    return tf.gather(above_g, gid, batch_dims=1), tf.gather(below_g, gid, batch_dims=1)


def abs_diff_row_sums_sorted(scores: tf.Tensor, mask: tf.Tensor | None = None) -> tf.Tensor:
    """``b_j = sum_l m_l * |s_j - s_l|`` in O(N log N) time and O(N) memory (sort + prefix sums).

    Same value as :func:`abs_diff_row_sums` and the same gradient, ties included. With the
    scores sorted in descending order ``t`` (weights ``w`` = mask in that order),

      ``b_(m) = t_m (W_after(m) - W_before(m)) + E_before(m) - E_after(m)``,

    where ``W_before(m) = sum_{l<m} w_l``, ``E_before(m) = sum_{l<m} w_l t_l`` (exclusive
    prefix sums) and ``*_after`` the matching suffix sums; the result is scattered back to
    item order. ``b`` is shift invariant, so the sums run on ``s - mean(s)``, in float64 for
    float32 input (O(N) extra work) to avoid cancellation at large ``N``.

    The gradient is written by hand so that it equals the dense one (``d|x|/dx = sign(x)``,
    0 at ties): for an upstream ``h = dL/db``,

      ``dL/ds_m = h_m (W_below(m) - W_above(m)) + w_m (H_below(m) - H_above(m))``

    with sums over items strictly below / above ``s_m`` (tied items excluded), computed
    from tie-group sums and prefix sums in O(N log N). Plain autodiff through the sort would
    give each tied item a different (valid) subgradient instead.

    Args:
      scores: float ``[batch_size, list_size]``.
      mask: optional bool/0-1 ``[batch_size, list_size]``; items with 0 are left out of the sum
        (their own ``b`` is still computed).

    Returns:
      ``[batch_size, list_size]`` in the dtype of ``scores``.
    """
    scores, mask = _prepare(scores, mask, "scores", sanitize=False)
    weights = tf.ones_like(scores) if mask is None else tf.cast(mask, scores.dtype)
    return _abs_diff_sorted(scores, weights)


@tf.custom_gradient
def _abs_diff_sorted(scores: tf.Tensor, weights: tf.Tensor) -> tuple[tf.Tensor, object]:
    dtype = scores.dtype
    work = tf.float64 if dtype in (tf.float16, tf.bfloat16, tf.float32) else dtype
    s = tf.cast(scores, work)
    w = tf.cast(weights, work)
    total_w = tf.reduce_sum(w, axis=1, keepdims=True)
    shift = tf.math.divide_no_nan(tf.reduce_sum(w * s, axis=1, keepdims=True), total_w)
    order = tf.argsort(s, axis=-1, direction="DESCENDING", stable=True)
    inverse = _inverse_permutation(order)
    t = tf.gather(s - shift, order, batch_dims=1)
    ws = tf.gather(w, order, batch_dims=1)
    wt = ws * t
    w_before = tf.cumsum(ws, axis=1, exclusive=True)
    e_before = tf.cumsum(wt, axis=1, exclusive=True)
    w_after = total_w - w_before - ws
    e_after = tf.reduce_sum(wt, axis=1, keepdims=True) - e_before - wt
    b_sorted = t * (w_after - w_before) + e_before - e_after
    b = tf.cast(_unsort(b_sorted, inverse), dtype)

    def grad(upstream: tf.Tensor) -> tuple[tf.Tensor, None]:
        hs = tf.gather(tf.cast(upstream, work), order, batch_dims=1)
        above, below = _tie_group_sums(t, tf.stack([ws, hs], axis=-1))
        g_sorted = hs * (below[..., 0] - above[..., 0]) + ws * (below[..., 1] - above[..., 1])
        return tf.cast(_unsort(g_sorted, inverse), dtype), None

    return b, grad
