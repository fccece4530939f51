"""Memory-lean exact LCRON ``(up, down)`` terms: no ``[B, N, N]`` matrix (pure TF, no Keras).

These functions compute exactly what :func:`lcron_tf.ops.topk.normalized_up_down` computes
with the dense relaxed permutation matrix ``P`` (``[batch_size, list_size, list_size]``,
index ``[b, row, item]``), in the same dtype, to rounding. With

  ``R_b = min(row_limit_b, n_sorted_b)`` (rows that count; rows ``>= n_sorted`` of ``P`` are 0),
  ``w_i = col_mask_i * sorted_i`` (columns that count),
  ``q_i = w_i * sum_{r < min(k, R)} P[r, i]``  (the "up" mass),
  ``d_i = w_i * sum_{k <= r < R} P[r, i]``      (the "down" mass),
  ``C_i = stop_gradient(q_i + d_i) + eps``,

the outputs are ``up = q / C`` and ``down = d / C``. Both ``q`` and ``d`` carry gradients
(LCRON's "down" numerator is not detached), so the full column sums are needed, value and
gradient.

**NeuralSort** (``P[r, i] = softmax_i(((n + 1 - 2r) s_i - b_i) / tau)``, ``r = 1..n``):

* ``b_i = sum_l |s_i - s_l|`` by sort + prefix sums in O(N log N)
  (:func:`lcron_tf.ops.sorting.abs_diff_row_sums_sorted`, tie-exact gradient); for
  ``N <= PAIRWISE_B_MAX_LIST_SIZE`` by a pairwise reduction with a hand-written gradient
  (XLA's CPU sort is slower than ``N`` abs-diffs there);
* every row's normaliser needs all ``N`` items, so the column sums are Theta(B N^2) exps
  (no stable sub-quadratic exact method is known). Memory, however, need not be N^2:
  the rows are streamed in chunks of ``chunk_size`` rows inside a ``tf.while_loop`` that
  accumulates ``q`` and ``d`` (``[B, N]``) and keeps only the per-row softmax statistics
  (max and inverse sum, ``[B, N, 2]``; kept apart rather than as ``max + log(sum)``, whose
  rounding at ``|z| ~ N |s| / tau`` would cost float32 digits). The backward pass
  (``tf.custom_gradient``) streams the same chunks again, recomputes
  ``P = exp(z - max) / sum`` and accumulates, with ``W[r, i]`` the upstream gradient of the
  row's block (``dL/dq_i w_i`` for ``r < k``, ``dL/dd_i w_i`` for ``k <= r < R``, 0 for
  rows ``>= R``), the softmax VJP ``G = P (W - rowsum(P W))`` into

    ``dL/ds_i += sum_r (n + 1 - 2r) G[r, i] / tau``, ``dL/db_i -= sum_r G[r, i] / tau``;

  ``dL/db`` then flows through ``b``'s own gradient. Peak memory is O(B * chunk * N)
  (the flash-attention pattern); time is 2 exps per matrix element (forward + recompute)
  instead of 1, but no ``[B, N, N]`` tensor is ever written to memory. Scores are shifted
  by their (detached) mean first: every row's softmax is shift invariant.

**SoftSort, p = 1** (``P[r, i] = softmax_i(-|t_r - s_i| / tau)``, ``t = sort_desc(s)``):
in sorted order (``u = t / tau``, item ``i`` at position ``m``) the kernel
``exp(-|u_r - u_m|)`` is a Laplace kernel, so every sum over rows or columns splits into
two one-sided sums that are first-order linear recurrences with the decay factors
``e_m = exp(-(u_m - u_{m+1})) in (0, 1]``:

  ``Z_r = Rt_r + e_{r-1} Lt_{r-1}`` (the row normalisers) with ``Rt_r = v_r + e_r Rt_{r+1}``,
  ``Lt_r = v_r + e_{r-1} Lt_{r-1}`` (``v`` = 1 for sorted items);
  ``col_m = F_m + e_m G_{m+1}`` with ``y_r = rho_r / Z_r``, ``F_m = y_m + e_{m-1} F_{m-1}``,
  ``G_m = y_m + e_m G_{m+1}`` (``rho`` = 1 on the rows of the set: ``r < k`` or ``k <= r < R``).

Each recurrence is evaluated by a work-efficient odd-even (Blelloch-style) scan: O(N) work,
log2(N) levels of reshapes (a Hillis-Steele scan, O(N log N), when the list size is not
static), with a hand-written O(N) adjoint (the transposed recurrence), so the autodiff
memory is O(B N). XLA keeps this linear in N (``tf.cumsum``/``cumulative_logsumexp`` lower to
``reduce_window``, which XLA must rewrite to avoid O(N^2); the scans use neither, and the
``tf.cumsum`` of the sorted ``b`` is measured linear under XLA: benchmarks/RESULTS.md).
Products and sums of numbers in ``[0, 1]`` never cancel or overflow, so this avoids the
pitfalls of the equivalent ``tf.math.cumulative_logsumexp`` form (``-inf`` at exclusive
starts, the NaN gradients of TF #111383 / #127551, the ``eps * |u|`` cancellation of ``u_m +
LSE(-u)``); scores are shifted by their (detached) mean and the O(N) scan arithmetic runs in
float64 for float32 input.

All functions work in eager mode, ``tf.function`` and ``tf.function(jit_compile=True)``.
"""

from __future__ import annotations

import math
import operator

import tensorflow as tf

from lcron_tf.ops import masking, sorting, validation

# Target number of [batch, row, item] elements per NeuralSort row chunk (float32: 4 MiB).
CHUNK_ELEMENTS = 1 << 20


def _scan_dtype(dtype: tf.DType) -> tf.DType:
    return tf.float64 if dtype in (tf.float16, tf.bfloat16, tf.float32) else dtype


def _prepare(
    scores: tf.Tensor,
    k: int,
    tau: float,
    row_limit: tf.Tensor,
    col_mask: tf.Tensor,
    sort_mask: tf.Tensor | None,
) -> tuple[tf.Tensor, int, float, tf.Tensor, tf.Tensor, tf.Tensor | None, tf.Tensor]:
    """Check and convert the common arguments.

    Returns ``(scores, k, tau, row_ok_limit [B, 1], col_w [B, N], valid [B, N] bool or None,
    n_sorted [B, 1])`` with float tensors in the dtype of ``scores``.
    """
    scores = tf.convert_to_tensor(scores)
    validation.check_rank2("scores", scores)
    if not scores.dtype.is_floating:
        scores = tf.cast(scores, tf.float32)
    dtype = scores.dtype
    k = validation.check_k("k", k, scores.shape[1])
    tau = validation.check_tau("tau", tau)
    col_mask = tf.convert_to_tensor(col_mask)
    validation.check_rank2("col_mask", col_mask)
    validation.check_same_shape("scores", scores, "col_mask", col_mask)
    col_w = tf.cast(col_mask, dtype)
    row_limit = tf.reshape(tf.cast(row_limit, dtype), [-1, 1])
    if sort_mask is None:
        valid = None
        n_sorted = tf.cast(tf.shape(scores)[1], dtype) * tf.ones_like(row_limit)
    else:
        sort_mask = tf.convert_to_tensor(sort_mask)
        validation.check_rank2("sort_mask", sort_mask)
        validation.check_same_shape("scores", scores, "sort_mask", sort_mask)
        valid = masking.valid_mask(sort_mask, "sort_mask")
        scores = masking.where_valid(scores, valid)  # padded slots may hold -inf / NaN
        col_w = masking.where_valid(col_w, valid)
        n_sorted = tf.reduce_sum(tf.cast(valid, dtype), axis=1, keepdims=True)
    return scores, k, tau, tf.minimum(row_limit, n_sorted), col_w, valid, n_sorted


def _centre(scores: tf.Tensor, valid: tf.Tensor | None) -> tf.Tensor:
    """``scores - stop_gradient(mean over sorted items)`` (both operators are shift invariant)."""
    if valid is None:
        mean = tf.reduce_mean(scores, axis=1, keepdims=True)
    else:
        m = tf.cast(valid, scores.dtype)
        total = tf.reduce_sum(scores * m, axis=1, keepdims=True)
        mean = tf.math.divide_no_nan(total, tf.reduce_sum(m, axis=1, keepdims=True))
    return scores - tf.stop_gradient(mean)


def default_chunk_size(batch_size: int | None, list_size: int | None) -> int:
    """Rows per NeuralSort chunk: about ``CHUNK_ELEMENTS`` elements of ``[B, chunk, N]``.

    Args:
      batch_size: static batch size or ``None`` (taken as 256).
      list_size: static list size or ``None`` (taken as 1024).

    Returns:
      An int in ``[1, list_size]`` (a power of two unless capped by ``list_size``).
    """
    b = batch_size or 256
    n = list_size or 1024
    c = max(1, CHUNK_ELEMENTS // max(1, b * n))
    c = 1 << (c.bit_length() - 1)  # round down to a power of two
    return max(1, min(c, n))


# Up to this static list size, b = sum_l |s_i - s_l| is computed pairwise (O(B N^2) flops)
# instead of by a sort: XLA's CPU sort costs ~75-100 ns per element. Measured crossover
# (B = 1024, fwd+bwd, XLA): pairwise faster at N = 40, equal at 64, slower at 100.
PAIRWISE_B_MAX_LIST_SIZE = 64

# --------------------------------------------------------------------------- NeuralSort


def abs_diff_row_sums_fused(scores: tf.Tensor, valid: tf.Tensor | None = None) -> tf.Tensor:
    """``b_i = sum_l m_l |s_i - s_l|`` as a pairwise reduction with a hand-written gradient.

    Same value and gradient as :func:`lcron_tf.ops.sorting.abs_diff_row_sums` (``sign(0) = 0``
    at ties), without autodiff storing the ``[B, N, N]`` sign matrix: the gradient is the
    pairwise reduction ``dL/ds_m = sum_l sign(s_m - s_l) (h_m w_l + w_m h_l)``. O(B N^2)
    flops and, where XLA materialises the differences, O(B N^2) transient memory: use it
    for small ``N`` only (no sort; see ``PAIRWISE_B_MAX_LIST_SIZE``).

    Args:
      scores: float ``[batch_size, list_size]``.
      valid: optional bool ``[batch_size, list_size]`` (the mask ``m``).

    Returns:
      ``[batch_size, list_size]`` in the dtype of ``scores``.
    """
    w = tf.ones_like(scores) if valid is None else tf.cast(valid, scores.dtype)
    return _abs_diff_fused(scores, w)


@tf.custom_gradient
def _abs_diff_fused(scores: tf.Tensor, w: tf.Tensor) -> tuple[tf.Tensor, object]:
    diff = scores[:, :, None] - scores[:, None, :]  # [B, N, N]
    b = tf.reduce_sum(tf.abs(diff) * w[:, None, :], axis=-1)

    def grad(h: tf.Tensor) -> tuple[tf.Tensor, None]:
        # dL/ds_m = sum_l sign(s_m - s_l) (h_m w_l + w_m h_l)
        sgn = tf.sign(scores[:, :, None] - scores[:, None, :])
        pair = h[:, :, None] * w[:, None, :] + w[:, :, None] * h[:, None, :]
        return tf.reduce_sum(sgn * pair, axis=-1), None

    return b, grad


def neural_sort_up_down(
    scores: tf.Tensor,
    k: int,
    *,
    tau: float,
    row_limit: tf.Tensor,
    col_mask: tf.Tensor,
    sort_mask: tf.Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Un-normalised NeuralSort "up"/"down" column masses ``(q, d)``, row-chunked (exact).

    ``q_i = w_i sum_{r < min(k, R)} P[r, i]`` and ``d_i = w_i sum_{k <= r < R} P[r, i]`` for the
    NeuralSort matrix ``P`` of ``scores`` (see the module docstring), computed without
    materialising ``P``: Theta(B N^2) time, O(B * chunk_size * N) peak memory, forward and
    backward.

    Args:
      scores: float32/float64 ``[batch_size, list_size]``.
      k: int, ``1 <= k <= list_size``.
      tau: temperature > 0.
      row_limit: ``[batch_size]`` number of rows that count.
      col_mask: 0/1 ``[batch_size, list_size]`` columns that count.
      sort_mask: optional 0/1 ``[batch_size, list_size]`` items included in the sort
        (``None``: all items, as the official code); ``n`` is then the number of sorted items.
      chunk_size: rows per chunk (default :func:`default_chunk_size`).

    Returns:
      ``(q, d)``, each ``[batch_size, list_size]`` in the dtype of ``scores``.
    """
    scores, k, tau, row_lim, col_w, valid, n_sorted = _prepare(
        scores, k, tau, row_limit, col_mask, sort_mask
    )
    dtype = scores.dtype
    list_size = scores.shape[1]
    if chunk_size is None:
        chunk_size = default_chunk_size(scores.shape[0], list_size)
    given = chunk_size
    try:
        if isinstance(chunk_size, bool):
            raise TypeError
        chunk_size = operator.index(chunk_size)  # ints and numpy integers, not floats
    except TypeError:
        chunk_size = 0
    if chunk_size < 1:
        raise ValueError(f"`chunk_size` must be an int >= 1. Received: chunk_size={given!r}")
    if list_size is not None:
        chunk_size = min(chunk_size, list_size)
        max_chunks = -(-list_size // chunk_size)
    else:
        max_chunks = None

    x = _centre(scores, valid)
    if list_size is not None and list_size <= PAIRWISE_B_MAX_LIST_SIZE:
        b = abs_diff_row_sums_fused(x, valid)
    else:
        b = sorting.abs_diff_row_sums_sorted(x, valid)
    inv_tau = tf.constant(1.0 / tau, dtype)
    # z[r, i] = coef_r * xs_i - bs_i with coef_r = n - 1 - 2r (0-based rows r).
    xs = x * inv_tau
    bs = b * inv_tau
    n_chunks = tf.cast(tf.math.ceil(tf.reduce_max(row_lim) / chunk_size), tf.int32)
    n_chunks = tf.maximum(n_chunks, 1)  # >= 1 chunk: the stats array is never empty
    if max_chunks is not None:
        n_chunks = tf.minimum(n_chunks, max_chunks)
    q, d = _neural_chunked(
        xs, bs, n_sorted - 1.0, valid, col_w, row_lim, n_chunks,
        k=k, chunk=chunk_size, max_chunks=max_chunks,
    )
    return q, d


def _neural_chunked(
    xs: tf.Tensor,
    bs: tf.Tensor,
    n_minus_1: tf.Tensor,
    valid: tf.Tensor | None,
    col_w: tf.Tensor,
    row_lim: tf.Tensor,
    n_chunks: tf.Tensor,
    *,
    k: int,
    chunk: int,
    max_chunks: int | None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Streamed column masses with a recomputing custom gradient w.r.t. ``xs`` and ``bs``."""
    dtype = xs.dtype
    masked = tf.constant(sorting.MASKED_LOGIT, dtype)
    rows0 = tf.range(chunk)

    def chunk_rows(c: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        r = c * chunk + rows0  # [C] int32
        fr = tf.cast(r, dtype)[None, :]
        coef = n_minus_1 - 2.0 * fr  # [B, C]
        ok = tf.cast(fr < row_lim, dtype)  # [B, C]
        up_w = ok * tf.cast(r < k, dtype)[None, :]
        return r, coef, up_w, ok - up_w

    def chunk_logits(xs_: tf.Tensor, bs_: tf.Tensor, coef: tf.Tensor) -> tf.Tensor:
        z = coef[:, :, None] * xs_[:, None, :] - bs_[:, None, :]  # [B, C, N]
        if valid is not None:
            z = tf.where(valid[:, None, :], z, masked)
        return z

    def stats_array() -> tf.TensorArray:
        size = max_chunks if max_chunks is not None else n_chunks
        return tf.TensorArray(
            dtype, size=size, element_shape=tf.TensorShape([xs.shape[0], chunk, 2]),
            clear_after_read=False,
        )

    @tf.custom_gradient
    def run(xs_: tf.Tensor, bs_: tf.Tensor) -> tuple[tuple[tf.Tensor, tf.Tensor], object]:
        def body(
            c: tf.Tensor, q: tf.Tensor, d: tf.Tensor, stats_ta: tf.TensorArray
        ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.TensorArray]:
            _, coef, up_w, dn_w = chunk_rows(c)
            z = chunk_logits(xs_, bs_, coef)
            # Keep the row max and the inverse sum apart (not max + log(sum)): z is large
            # (~ N |s| / tau) and a rounded log-normaliser would lose log(sum)'s precision.
            z_max = tf.stop_gradient(tf.reduce_max(z, axis=-1, keepdims=True))  # [B, C, 1]
            ez = tf.exp(z - z_max)
            inv_sum = 1.0 / tf.reduce_sum(ez, axis=-1, keepdims=True)
            q = q + tf.reduce_sum(ez * (inv_sum * up_w[:, :, None]), axis=1)
            d = d + tf.reduce_sum(ez * (inv_sum * dn_w[:, :, None]), axis=1)
            stats = tf.concat([z_max, inv_sum], axis=-1)  # [B, C, 2]
            return c + 1, q, d, stats_ta.write(c, stats)

        zeros = tf.zeros_like(xs_)
        _, q, d, stats_ta = tf.while_loop(
            lambda c, *_: c < n_chunks,
            body,
            (tf.constant(0), zeros, zeros, stats_array()),
            maximum_iterations=max_chunks,
        )
        stats_all = stats_ta.stack()  # [n_chunks or max_chunks, B, C, 2]

        def grad(gq: tf.Tensor, gd: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            wq = (gq * col_w)[:, None, :]
            wd = (gd * col_w)[:, None, :]

            def gbody(
                c: tf.Tensor, gx: tf.Tensor, gb: tf.Tensor
            ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
                _, coef, up_w, dn_w = chunk_rows(c)
                z = chunk_logits(xs_, bs_, coef)
                stats = tf.gather(stats_all, c)  # [B, C, 2]
                p = tf.exp(z - stats[:, :, :1]) * stats[:, :, 1:]
                w = up_w[:, :, None] * wq + dn_w[:, :, None] * wd  # [B, C, N]
                pw = p * w
                g = pw - p * tf.reduce_sum(pw, axis=-1, keepdims=True)  # softmax VJP
                gx = gx + tf.reduce_sum(coef[:, :, None] * g, axis=1)
                gb = gb - tf.reduce_sum(g, axis=1)
                return c + 1, gx, gb

            gzero = tf.zeros_like(xs_)
            _, gx, gb = tf.while_loop(
                lambda c, *_: c < n_chunks,
                gbody,
                (tf.constant(0), gzero, gzero),
                maximum_iterations=max_chunks,
            )
            return gx, gb

        return (q * col_w, d * col_w), grad

    return run(xs, bs)


# --------------------------------------------------------------------------- SoftSort


def _shift_right(x: tf.Tensor, d: int | tf.Tensor, fill: float) -> tf.Tensor:
    """``out[:, m] = x[:, m - d]`` for ``m >= d``, ``fill`` before (axis 1 of ``[B, N, ...]``)."""
    if x.shape[1] is not None and isinstance(d, int):
        if d >= x.shape[1]:
            return tf.fill(tf.shape(x), tf.cast(fill, x.dtype))
        pad = [[0, 0], [d, 0]] + [[0, 0]] * (x.shape.rank - 2)
        return tf.pad(x[:, :-d], pad, constant_values=fill)
    n = tf.shape(x)[1]
    idx = tf.range(n)
    rolled = tf.roll(x, shift=d, axis=1)
    keep = tf.reshape(idx >= d, [1, -1] + [1] * (x.shape.rank - 2))
    return tf.where(keep, rolled, tf.cast(fill, x.dtype))


def _hs_scan(a: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    """Hillis-Steele scan of ``y_m = x_m + a_m y_{m-1}`` (``y_0 = x_0``) along axis 1.

    ``a``: ``[B, N, 1]`` in ``[0, 1]``; ``x``: ``[B, N, V]``. log2(N) steps of O(N) work.
    Used when the list size is not static.
    """
    n_static = x.shape[1]
    if n_static is not None:
        steps = max(0, math.ceil(math.log2(n_static))) if n_static > 1 else 0
    else:
        steps = 31
    d = 1
    for _ in range(steps):
        x = x + a * _shift_right(x, d, 0.0)
        a = a * _shift_right(a, d, 0.0)
        d *= 2
    return x


def _odd_even_scan(a: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    """Work-efficient scan of ``y_m = x_m + a_m y_{m-1}`` (``y_0 = x_0``) along a static axis 1.

    Recursive odd-even reduction: pair ``(2j, 2j+1)`` into one affine step, scan the
    ``N/2`` pairs, then fill in the even positions. O(N) work, log2(N) levels, and
    reshapes instead of shifts, so XLA emits a few small fusions per level.

    Args:
      a: ``[B, N, 1]`` coefficients (``a_0`` must be 0 or is ignored through ``y_{-1} = 0``).
      x: ``[B, N, V]``.

    Returns:
      ``y``, ``[B, N, V]``.
    """
    n = x.shape[1]
    if n == 1:
        return x
    if n % 2:
        x = tf.pad(x, [[0, 0], [0, 1], [0, 0]])
        a = tf.pad(a, [[0, 0], [0, 1], [0, 0]])
    half = (n + 1) // 2
    x2 = tf.reshape(x, [-1, half, 2, x.shape[2]])
    a2 = tf.reshape(a, [-1, half, 2, a.shape[2]])
    x_even, x_odd = x2[:, :, 0], x2[:, :, 1]
    a_even, a_odd = a2[:, :, 0], a2[:, :, 1]
    # y_{2j+1} = (x_{2j+1} + a_{2j+1} x_{2j}) + (a_{2j+1} a_{2j}) y_{2j-1}
    y_odd = _odd_even_scan(a_odd * a_even, x_odd + a_odd * x_even)
    # y_{2j} = x_{2j} + a_{2j} y_{2j-1}
    prev = tf.pad(y_odd[:, :-1], [[0, 0], [1, 0], [0, 0]])
    y_even = x_even + a_even * prev
    y = tf.reshape(tf.stack([y_even, y_odd], axis=2), [-1, 2 * half, x.shape[2]])
    return y[:, :n]


def _scan(a: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    if x.shape[1] is not None and x.shape[2] is not None:
        return _odd_even_scan(a, x)
    return _hs_scan(a, x)


@tf.custom_gradient
def _linear_scan(a: tf.Tensor, x: tf.Tensor) -> tuple[tf.Tensor, object]:
    """``y_m = x_m + a_m y_{m-1}`` along axis 1 with an O(N)-memory adjoint.

    Args:
      a: ``[B, N, 1]`` decay factors (``a_0`` is ignored).
      x: ``[B, N, V]``.

    Returns:
      ``y``: ``[B, N, V]``. The adjoint is the transposed recurrence
      ``gx_m = gy_m + a_{m+1} gx_{m+1}`` and ``ga_m = sum_v gx_m y_{m-1}``.
    """
    a0 = a * tf.reshape(tf.cast(tf.range(tf.shape(a)[1]) > 0, a.dtype), [1, -1, 1])
    y = _scan(a0, x)

    def grad(gy: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        a_next = tf.reverse(_shift_right(tf.reverse(a0, [1]), 1, 0.0), [1])  # a_{m+1}
        gx = tf.reverse(_scan(tf.reverse(a_next, [1]), tf.reverse(gy, [1])), [1])
        y_prev = _shift_right(y, 1, 0.0)
        ga = tf.reduce_sum(gx * y_prev, axis=-1, keepdims=True)
        return ga, gx

    return y, grad


def _scan_forward(a: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    """``y_m = x_m + a_m y_{m-1}``."""
    return _linear_scan(a, x)


def _scan_reverse(c: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    """``y_m = x_m + c_m y_{m+1}`` (``c_{N-1}`` ignored)."""
    return tf.reverse(_linear_scan(tf.reverse(c, [1]), tf.reverse(x, [1])), [1])


def soft_sort_up_down(
    scores: tf.Tensor,
    k: int,
    *,
    tau: float,
    row_limit: tf.Tensor,
    col_mask: tf.Tensor,
    sort_mask: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Un-normalised SoftSort (p = 1) "up"/"down" column masses ``(q, d)`` by one-sided scans.

    Exact (see the module docstring): O(B N log N) time and O(B N) memory, gradient included.

    Args:
      scores: float32/float64 ``[batch_size, list_size]``.
      k: int, ``1 <= k <= list_size``.
      tau: temperature > 0.
      row_limit: ``[batch_size]`` number of rows that count.
      col_mask: 0/1 ``[batch_size, list_size]`` columns that count.
      sort_mask: optional 0/1 ``[batch_size, list_size]`` items included in the sort
        (``None``: all items); excluded items are sorted last, as in
        :func:`lcron_tf.ops.sorting.soft_sort`.

    Returns:
      ``(q, d)``, each ``[batch_size, list_size]`` in the dtype of ``scores``.
    """
    scores, k, tau, row_lim, col_w, valid, n_sorted = _prepare(
        scores, k, tau, row_limit, col_mask, sort_mask
    )
    dtype = scores.dtype
    work = _scan_dtype(dtype)
    key = scores if valid is None else masking.padded_last_key(scores, valid)
    order = tf.argsort(key, axis=-1, direction="DESCENDING", stable=True)
    inverse = sorting._inverse_permutation(order)
    t = tf.gather(tf.cast(_centre(key, valid), work), order, batch_dims=1)
    u = t / tau  # [B, N] descending
    # e[m] = exp(-(u_m - u_{m+1})) in (0, 1]; as a coefficient on y_{m-1} it is e[m-1].
    gaps = u[:, :-1] - u[:, 1:]
    e_right = tf.concat([tf.exp(-gaps), tf.zeros_like(u[:, :1])], axis=1)[:, :, None]  # e_m
    e_left = tf.concat([tf.zeros_like(u[:, :1]), tf.exp(-gaps)], axis=1)[:, :, None]  # e_{m-1}

    pos = tf.cast(tf.range(tf.shape(u)[1]), work)[None, :]  # [1, N]
    v = tf.cast(pos < tf.cast(n_sorted, work), work)  # sorted items come first
    lt = _scan_forward(e_left, v[:, :, None])  # Lt_m = v_m + e_{m-1} Lt_{m-1}
    rt = _scan_reverse(e_right, v[:, :, None])  # Rt_m = v_m + e_m Rt_{m+1}
    z = rt + e_left * _shift_right(lt, 1, 0.0)  # [B, N, 1] row normalisers
    lim = tf.cast(row_lim, work)
    ok = tf.cast(pos < lim, work)
    up_rows = ok * tf.cast(pos < k, work)
    rho = tf.stack([up_rows, ok - up_rows], axis=-1)  # [B, N, 2]
    y = tf.math.divide_no_nan(rho, z)
    f = _scan_forward(e_left, y)
    g = _scan_reverse(e_right, y)
    cols = f + e_right * tf.reverse(_shift_right(tf.reverse(g, [1]), 1, 0.0), [1])  # [B, N, 2]
    cols = tf.cast(tf.gather(cols, inverse, batch_dims=1), dtype) * col_w[:, :, None]
    return cols[..., 0], cols[..., 1]


# --------------------------------------------------------------------------- dispatch


def normalized_up_down_lean(
    scores: tf.Tensor,
    k: int,
    *,
    tau: float,
    sort: str,
    row_limit: tf.Tensor,
    col_mask: tf.Tensor,
    sort_mask: tf.Tensor | None = None,
    eps: float,
    chunk_size: int | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Lean equivalent of :func:`lcron_tf.ops.topk.normalized_up_down` (same arguments).

    ``up = q / (stop_gradient(q + d) + eps)``, ``down = d / (stop_gradient(q + d) + eps)`` with
    ``(q, d)`` from :func:`neural_sort_up_down` (``sort="neural"``) or
    :func:`soft_sort_up_down` (``sort="soft"``).

    Returns:
      ``(up, down)``, each ``[batch_size, list_size]`` in the dtype of ``scores``.
    """
    validation.check_choice("sort", sort, validation.SORT_CHOICES)
    if sort == "neural":
        q, d = neural_sort_up_down(
            scores, k, tau=tau, row_limit=row_limit, col_mask=col_mask, sort_mask=sort_mask,
            chunk_size=chunk_size,
        )
    else:
        q, d = soft_sort_up_down(
            scores, k, tau=tau, row_limit=row_limit, col_mask=col_mask, sort_mask=sort_mask
        )
    norm = tf.stop_gradient(q + d) + eps
    return q / norm, d / norm
