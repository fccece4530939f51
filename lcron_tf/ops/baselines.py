"""Shared pure-TF math of the seven baselines of the LCRON paper (lcron_method.md §5).

Every function works on one batch of requests, ``[batch_size, list_size]`` (``B``, ``N``)
tensors, with an explicit 0/1 ``mask`` (1 = real candidate). Padded candidates are
excluded everywhere: from hard ranks and top-k sets, from pairs, from label matrices.
Sorting, relaxed top-k and label-matrix math is not repeated here: it comes from
:mod:`lcron_tf.ops.sorting`, :mod:`lcron_tf.ops.topk` and :mod:`lcron_tf.ops.labels`.

Contents:

* hard ranks and top-k sets (RankFlow's cascade of subsets, LambdaLoss's ranks):
  :func:`hard_ranks`, :func:`topk_mask`;
* ICC's differentiable k-th largest score, soft stage indicators and fused score:
  :func:`kth_largest`, :func:`soft_indicator`, :func:`icc_fused_score`;
* pairwise logistic losses with arbitrary pair weights and targets (ICC, FS-RankNet,
  FS-LambdaLoss): :func:`pair_mask`, :func:`pairwise_logistic`;
* label tiers (the ground truth collapsed into one tier, as the official stage groups):
  :func:`ground_truth_mass`, :func:`tier_labels`, :func:`tier_index`,
  :func:`group_pair_weights`;
* LambdaLoss pair weights (TF-Ranking's ``LambdaWeight``, NDCG, linear gains):
  :func:`lambda_pair_weights`;
* masked BCE with the official "mean over all elements" option: :func:`masked_sigmoid_bce`;
* ARF: :func:`permutation_cross_entropy` (``L_global``) and :func:`relaxed_topk_mean_nll`
  (``L_relax`` of the first ARF version).

All returned losses are per request (``[batch_size]``); callers average over the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from lcron_tf.ops import labels as labels_ops
from lcron_tf.ops import topk, validation

# ---------------------------------------------------------------------------------------
# Hard ranks and top-k sets
# ---------------------------------------------------------------------------------------


def _floor_key(scores: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """``scores`` with padded items replaced by a value below every valid score of the row.

    The replacement is ``min(valid scores) - 1`` (detached; it depends on no padded value),
    so it is finite for finite scores.
    """
    valid = tf.cast(mask, tf.bool)
    top = tf.reduce_max(scores, axis=-1, keepdims=True)
    floor = tf.stop_gradient(
        tf.reduce_min(tf.where(valid, scores, top), axis=-1, keepdims=True) - 1.0
    )
    return tf.where(valid, scores, floor)


def hard_ranks(scores: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """1-based descending rank of every item among the valid items (no gradient).

    Ties are broken by index (stable sort). Padded items are ranked after every valid
    item, so their ranks are ``> n_valid``.

    Args:
      scores: float ``[batch_size, list_size]``.
      mask: 0/1 ``[batch_size, list_size]``.

    Returns:
      int32 ``[batch_size, list_size]``.
    """
    key = tf.stop_gradient(_floor_key(tf.convert_to_tensor(scores), mask))
    order = tf.argsort(key, axis=-1, direction="DESCENDING", stable=True)
    return tf.argsort(order, axis=-1, stable=True) + 1


def topk_mask(scores: tf.Tensor, k: int, mask: tf.Tensor) -> tf.Tensor:
    """0/1 indicator of the ``k`` highest-scored valid items (all valid ones if fewer).

    Args:
      scores: float ``[batch_size, list_size]``.
      k: int ``>= 1``.
      mask: 0/1 ``[batch_size, list_size]``; only these items can be selected.

    Returns:
      ``[batch_size, list_size]`` in the dtype of ``scores``, no gradient.
    """
    scores = tf.convert_to_tensor(scores)
    ranks = hard_ranks(scores, mask)
    return tf.cast(ranks <= k, scores.dtype) * tf.cast(mask, scores.dtype)


# ---------------------------------------------------------------------------------------
# ICC
# ---------------------------------------------------------------------------------------


def kth_largest(scores: tf.Tensor, k: int, mask: tf.Tensor) -> tf.Tensor:
    """ICC's cut-off ``kappa``: the ``k``-th largest valid score of each request.

    Differentiable (the gradient goes to the item holding the k-th score, as in the
    official ``torch.gather`` of the top-k values). With fewer than ``k`` valid items it
    is ``min(valid scores) - 1`` (detached), below every valid score.

    Args:
      scores: float ``[batch_size, list_size]``.
      k: int, ``1 <= k <= list_size``.
      mask: 0/1 ``[batch_size, list_size]``.

    Returns:
      ``[batch_size, 1]``, dtype of ``scores``.
    """
    scores = tf.convert_to_tensor(scores)
    k = validation.check_k("k", k, scores.shape[1])
    values = tf.math.top_k(_floor_key(scores, mask), k=k, sorted=True).values
    return values[:, k - 1 : k]


def soft_indicator(scores: tf.Tensor, kappa: tf.Tensor, sigma: float) -> tf.Tensor:
    """ICC's logistic stage indicator ``I = sigmoid((s - kappa) / sigma)``.

    Args:
      scores: float ``[batch_size, list_size]``.
      kappa: float ``[batch_size, 1]`` (see :func:`kth_largest`).
      sigma: temperature > 0 (official code: 1e-3).

    Returns:
      ``[batch_size, list_size]`` in ``(0, 1)``.
    """
    sigma = validation.check_positive("sigma", sigma)
    return tf.sigmoid((scores - kappa) / sigma)


def icc_fused_score(
    stage_logits: Sequence[tf.Tensor],
    ks: Sequence[int],
    mask: tf.Tensor,
    sigma: float = 1e-3,
    scales: Sequence[float] | None = None,
) -> tf.Tensor:
    """ICC's ensemble score of a cascade (Gallagher et al. 2019, as coded in kwai/LCRON).

    With ``I_s = sigmoid((s_s - kappa_s) / sigma)``, ``kappa_s`` the ``ks[s]``-th largest
    score of stage ``s``, ``G_s = prod_{t<s} I_t`` (``G_1 = 1``) and ``c_s = scales[s]``::

      s_ens = sum_{s<S} c_s * G_s * (1 - I_s) * s_s  +  c_S * G_S * I_S * s_S

    An item dropped at stage ``s`` is scored by stage ``s``; a survivor of every stage by
    the last one. The official two-stage code uses ``c = (1, 1)``, the three-stage one
    ``c = (1, 2, 4)``. A stage with fewer than ``k_s`` valid candidates keeps them all
    (``I_s = 1``).

    Args:
      stage_logits: list of float ``[batch_size, list_size]``, first stage first.
      ks: one cut-off per stage.
      mask: 0/1 ``[batch_size, list_size]``.
      sigma: indicator temperature.
      scales: one ``c_s`` per stage (default all 1).

    Returns:
      ``[batch_size, list_size]``.
    """
    num = len(stage_logits)
    if len(ks) != num:
        raise ValueError(f"`ks` needs one entry per stage ({num}). Received: ks={list(ks)!r}")
    scales = [1.0] * num if scales is None else [float(c) for c in scales]
    if len(scales) != num:
        raise ValueError(
            f"`scales` needs one entry per stage ({num}). Received: scales={scales!r}"
        )
    fused = tf.zeros_like(stage_logits[0])
    gate = tf.ones_like(stage_logits[0])
    n_valid = tf.reduce_sum(tf.cast(mask, stage_logits[0].dtype), axis=1, keepdims=True)
    for s, (x, k, c) in enumerate(zip(stage_logits, ks, scales)):
        ind = soft_indicator(x, kth_largest(x, k, mask), sigma)
        # Fewer than k valid candidates: the stage keeps them all.
        ind = tf.where(n_valid < k, tf.ones_like(ind), ind)
        if s < num - 1:
            fused = fused + c * gate * (1.0 - ind) * x
            gate = gate * ind
        else:
            fused = fused + c * gate * ind * x
    return fused


# ---------------------------------------------------------------------------------------
# Pairwise logistic losses
# ---------------------------------------------------------------------------------------


def pair_mask(mask: tf.Tensor) -> tf.Tensor:
    """``m_i * m_j * 1[i != j]``: the pairs of two distinct valid items.

    Args:
      mask: 0/1 float ``[batch_size, list_size]``.

    Returns:
      ``[batch_size, list_size, list_size]`` in the dtype of ``mask``.
    """
    mask = tf.convert_to_tensor(mask)
    off_diag = 1.0 - tf.eye(tf.shape(mask)[1], dtype=mask.dtype)
    return mask[:, :, None] * mask[:, None, :] * off_diag[None]


def greater_pairs(values: tf.Tensor) -> tf.Tensor:
    """``1[v_i > v_j]`` as ``[batch_size, list_size, list_size]`` (dtype of ``values``)."""
    values = tf.stop_gradient(tf.convert_to_tensor(values))
    return tf.cast(values[:, :, None] > values[:, None, :], values.dtype)


def pairwise_logistic(scores: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """``sum_{i,j} w_ij * BCE(sigmoid(s_i - s_j), t_ij)`` per request (RankNet form).

    ``BCE(sigmoid(x), t) = softplus(x) - t * x``, computed stably for any finite ``x``.

    Args:
      scores: float ``[batch_size, list_size]``.
      targets: ``[batch_size, list_size, list_size]`` pair targets in ``[0, 1]``.
      weights: ``[batch_size, list_size, list_size]`` pair weights (0 = pair ignored).

    Returns:
      ``[batch_size]``, dtype of ``scores``.
    """
    diff = scores[:, :, None] - scores[:, None, :]
    loss = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(targets, diff.dtype), logits=diff)
    return tf.reduce_sum(tf.cast(weights, diff.dtype) * loss, axis=[1, 2])


# ---------------------------------------------------------------------------------------
# Ground truth and label tiers
# ---------------------------------------------------------------------------------------


def ground_truth_mass(labels: tf.Tensor, mask: tf.Tensor, gt_num: int) -> tf.Tensor:
    """``y_i``: mass of item ``i`` in the first ``gt_num`` rows of the (soft) label matrix.

    1 for the ``gt_num`` best-labelled valid items, 0 for the others, and ``r / t`` for the
    members of a tie group of size ``t`` that straddles position ``gt_num`` with ``r`` of its
    positions inside (the official ``sum_{r<10} Lab[r, i]``).

    Args:
      labels: float ``[batch_size, list_size]``, higher = better.
      mask: 0/1 ``[batch_size, list_size]``.
      gt_num: int >= 1.

    Returns:
      ``[batch_size, list_size]`` in the dtype of ``labels``, no gradient.
    """
    count = tf.reduce_sum(tf.cast(mask, labels.dtype), axis=1)
    return labels_ops.label_row_mass(labels, 0, tf.minimum(count, float(gt_num)), mask)


def tier_labels(labels: tf.Tensor, mask: tf.Tensor, gt_num: int) -> tf.Tensor:
    """Labels with the ground truth collapsed into one tier above every other label.

    Items with ``ground_truth_mass > 0`` get ``max(valid labels) + 1``; the others keep
    their label. On RecFlow-shaped labels (``rank_pos`` 10..29, then 7 / 6 / 5) the
    distinct values are exactly the official stage groups (rank_pos, rank_neg,
    coarse_neg, prerank_neg).

    Args:
      labels: float ``[batch_size, list_size]``.
      mask: 0/1 ``[batch_size, list_size]``.
      gt_num: int >= 1.

    Returns:
      ``[batch_size, list_size]``, dtype of ``labels``, no gradient.
    """
    labels = tf.stop_gradient(labels)
    valid = tf.cast(mask, tf.bool)
    floor = tf.reduce_min(labels, axis=1, keepdims=True)
    top = tf.reduce_max(tf.where(valid, labels, floor), axis=1, keepdims=True) + 1.0
    gt = ground_truth_mass(labels, mask, gt_num) > 0
    return tf.where(gt, tf.broadcast_to(top, tf.shape(labels)), labels)


def _group_sizes(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """``G_i = sum_j m_j 1[v_j == v_i]`` (>= 1 for valid items)."""
    eq = tf.cast(values[:, :, None] == values[:, None, :], values.dtype)
    return tf.reduce_sum(eq * mask[:, None, :], axis=2)


def tier_index(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Dense descending rank of each item's value among the valid items (0 = best tier).

    ``tier_i = sum_j m_j 1[v_j > v_i] / G_j`` = the number of distinct valid values above.

    Args:
      values: float ``[batch_size, list_size]`` (e.g. :func:`tier_labels`).
      mask: 0/1 float ``[batch_size, list_size]``.

    Returns:
      ``[batch_size, list_size]``, dtype of ``values`` (integer-valued), no gradient.
    """
    values = tf.stop_gradient(values)
    mask = tf.cast(mask, values.dtype)
    sizes = _group_sizes(values, mask)
    above = greater_pairs(values)  # [b, i, j] = 1[v_i > v_j]
    inv = tf.math.divide_no_nan(mask, sizes)  # [B, N]
    return tf.reduce_sum(tf.transpose(above, [0, 2, 1]) * inv[:, None, :], axis=2)


def group_pair_weights(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """FS-RankNet pair weights: each group's pairs against all lower groups, averaged.

    ``W_ij = m_i m_j 1[v_i > v_j] / (G_i * L_i)`` with ``G_i`` the number of valid items
    with ``v_i``'s value and ``L_i`` the number of valid items below it. Summed against a
    per-pair loss this is ``sum_g mean_{i in g, j below g} loss_ij``: the official
    FS-RankNet terms (rank_pos vs the 30 lower, rank_neg vs the 20 lower, coarse_neg vs the
    10 lower), each a mean over its pairs.

    Args:
      values: float ``[batch_size, list_size]`` (tier labels or raw labels).
      mask: 0/1 float ``[batch_size, list_size]``.

    Returns:
      ``[batch_size, list_size, list_size]``, dtype of ``values``, no gradient.
    """
    values = tf.stop_gradient(values)
    mask = tf.cast(mask, values.dtype)
    pairs = greater_pairs(values) * pair_mask(mask)
    sizes = _group_sizes(values, mask)
    below = tf.reduce_sum(pairs, axis=2)
    return tf.math.divide_no_nan(pairs, (sizes * below)[:, :, None])


# ---------------------------------------------------------------------------------------
# LambdaLoss
# ---------------------------------------------------------------------------------------


def _discount(rank: tf.Tensor) -> tf.Tensor:
    """``1 / ln(1 + rank)`` (the log base cancels in LambdaLoss's normalised weights)."""
    return 1.0 / tf.math.log1p(rank)


def lambda_pair_weights(
    scores: tf.Tensor,
    labels: tf.Tensor,
    mask: tf.Tensor,
    topn: int | None = None,
    smooth_fraction: float = 0.0,
) -> tf.Tensor:
    """LambdaLoss pair weights (Wang et al. 2018; TF-Ranking ``NDCGLambdaWeight``), detached.

    With ``r_i`` the 1-based rank of item ``i`` by ``scores`` among the valid items,
    gains ``g_i = l_i / IDCG`` (linear gain, ``IDCG = sum_r l_(r) / ln(r + 1)`` over the
    valid labels sorted descending; 0 if ``IDCG <= 0``), ``D(r) = 1 / ln(r + 1)`` for
    ``r <= topn`` else 0, ``d = |r_i - r_j|``::

      u_ij = |D(d) - D(d + 1)|   if d > 0 and min(r_i, r_j) <= topn, else 0
      v_ij = |D(r_i) - D(r_j)|
      w_ij = m_i m_j |g_i - g_j| ((1 - mu) u_ij + mu v_ij),   mu = smooth_fraction

    Args:
      scores: float ``[batch_size, list_size]`` (only their order is used).
      labels: float ``[batch_size, list_size]``, higher = better.
      mask: 0/1 ``[batch_size, list_size]``.
      topn: rank cut-off (``None`` = list size).
      smooth_fraction: ``mu`` in ``[0, 1]``.

    Returns:
      ``[batch_size, list_size, list_size]``, dtype of ``scores``, no gradient.
    """
    scores = tf.convert_to_tensor(scores)
    dtype = scores.dtype
    if not 0.0 <= float(smooth_fraction) <= 1.0:
        raise ValueError(
            f"`smooth_fraction` must be in [0, 1]. Received: smooth_fraction={smooth_fraction!r}"
        )
    n_items = tf.shape(scores)[1]
    top = tf.cast(n_items if topn is None else topn, dtype)
    mask = tf.cast(mask, dtype)
    labels = tf.stop_gradient(tf.cast(labels, dtype)) * mask
    ranks = tf.cast(hard_ranks(scores, mask), dtype)  # [B, N]

    # IDCG over the valid labels sorted descending.
    sorted_labels = tf.sort(_floor_key(labels, mask), axis=-1, direction="DESCENDING")
    positions = tf.cast(tf.range(1, n_items + 1), dtype)[None, :]
    n_valid = tf.reduce_sum(mask, axis=1, keepdims=True)
    ideal = sorted_labels * tf.cast(positions <= n_valid, dtype) * _discount(positions)
    idcg = tf.reduce_sum(ideal, axis=1, keepdims=True)
    gains = tf.where(
        idcg > 0, labels / tf.where(idcg > 0, idcg, tf.ones_like(idcg)), tf.zeros_like(labels)
    )

    rank_diff = tf.abs(ranks[:, :, None] - ranks[:, None, :])
    safe = tf.maximum(rank_diff, 1.0)
    in_top = tf.minimum(ranks[:, :, None], ranks[:, None, :]) <= top
    u = tf.where(
        (rank_diff > 0) & in_top,
        tf.abs(_discount(safe) - _discount(safe + 1.0)),
        tf.zeros_like(rank_diff),
    )
    d = tf.where(ranks <= top, _discount(ranks), tf.zeros_like(ranks))
    v = tf.abs(d[:, :, None] - d[:, None, :])
    mu = float(smooth_fraction)
    discount = (1.0 - mu) * u + mu * v
    weights = tf.abs(gains[:, :, None] - gains[:, None, :]) * discount * pair_mask(mask)
    return tf.stop_gradient(weights)


# ---------------------------------------------------------------------------------------
# BCE
# ---------------------------------------------------------------------------------------


def masked_sigmoid_bce(
    logits: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor, normalizer: tf.Tensor
) -> tf.Tensor:
    """``sum_i w_i BCE(sigmoid(s_i), t_i) / normalizer`` per request (0 when normalizer = 0).

    ``normalizer = sum_i w_i`` is the mean over the candidates that count; a fixed slot
    count (e.g. ``list_size``) is the official ``reduction='mean'`` with mask weights, which
    divides by the number of elements, padded ones included.

    Args:
      logits: float ``[batch_size, list_size]``.
      targets: float ``[batch_size, list_size]`` in ``[0, 1]``.
      weights: float ``[batch_size, list_size]`` (0/1 masks).
      normalizer: float ``[batch_size]`` (or a scalar).

    Returns:
      ``[batch_size]``, dtype of ``logits``.
    """
    targets = tf.cast(targets, logits.dtype)
    loss = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
    total = tf.reduce_sum(tf.cast(weights, logits.dtype) * loss, axis=1)
    normalizer = tf.broadcast_to(tf.cast(normalizer, logits.dtype), tf.shape(total))
    return tf.math.divide_no_nan(total, normalizer)


# ---------------------------------------------------------------------------------------
# ARF
# ---------------------------------------------------------------------------------------


def permutation_cross_entropy(
    perm: tf.Tensor, label_perm: tf.Tensor, eps: float = topk.EPS
) -> tf.Tensor:
    """ARF's ``L_global`` numerator: ``sum_{r,i} -Lab[r, i] ln(P[r, i] + eps)`` per request.

    Args:
      perm: float ``[batch_size, list_size, list_size]`` relaxed permutation matrix of the
        scores (``[b, row, item]``, e.g. :func:`lcron_tf.ops.neural_sort` with a mask).
      label_perm: same shape, the label permutation matrix
        (:func:`lcron_tf.ops.label_permutation_matrix`, soft as the official ARF code).
      eps: added inside the log (official 1e-6).

    Returns:
      ``[batch_size]``, dtype of ``perm``. Divide by ``n_valid**2`` for the official mean
      over rows and items.
    """
    label_perm = tf.stop_gradient(tf.cast(label_perm, perm.dtype))
    return tf.reduce_sum(-label_perm * tf.math.log(perm + eps), axis=[1, 2])


def relaxed_topk_mean_nll(
    perm: tf.Tensor, targets: tf.Tensor, m: int, mask: tf.Tensor, eps: float = topk.EPS
) -> tf.Tensor:
    """First-version ARF ``L_relax`` numerator: ``sum_i m_i y_i (-ln(mean_{r<m} P[r, i] + eps))``.

    The official code averages (not sums) the first ``m`` rows; the log of a mean differs
    from the log of the sum by the constant ``ln m`` (up to ``eps``), so the gradients
    are those of the relaxed top-``m`` membership.

    Args:
      perm: float ``[batch_size, list_size, list_size]``.
      targets: float ``[batch_size, list_size]`` (the ground-truth mass ``y``).
      m: number of rows (the stage's quota), ``1 <= m <= list_size``.
      mask: 0/1 ``[batch_size, list_size]``.
      eps: added inside the log.

    Returns:
      ``[batch_size]``, dtype of ``perm``.
    """
    m = validation.check_k("m", m, perm.shape[1])
    membership = topk.relaxed_topk_membership(perm, m) / float(m)
    weights = tf.cast(mask, perm.dtype) * tf.cast(targets, perm.dtype)
    items = -weights * tf.math.log(membership + eps)
    return tf.reduce_sum(items, axis=1)


__all__ = [
    "greater_pairs",
    "ground_truth_mass",
    "group_pair_weights",
    "hard_ranks",
    "icc_fused_score",
    "kth_largest",
    "lambda_pair_weights",
    "masked_sigmoid_bce",
    "pair_mask",
    "pairwise_logistic",
    "permutation_cross_entropy",
    "relaxed_topk_mean_nll",
    "soft_indicator",
    "tier_index",
    "tier_labels",
    "topk_mask",
]
