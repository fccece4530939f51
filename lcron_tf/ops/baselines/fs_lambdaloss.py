"""FS-LambdaLoss baseline: full-stage LambdaLoss with NDCG pair weights (pure TF)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from lcron_tf.ops import contract, masking, ranking, validation
from lcron_tf.ops.baselines import common


def _discount(rank: tf.Tensor) -> tf.Tensor:
    """``1 / ln(1 + rank)`` (the log base cancels in LambdaLoss's normalised weights)."""
    return 1.0 / tf.math.log1p(rank)


def _check_smooth_fraction(value: float) -> float:
    if isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(
            f"`smooth_fraction` must be in [0, 1]. Received: smooth_fraction={value!r}"
        )
    return float(value)


def lambda_pair_weights(
    scores: tf.Tensor,
    labels: tf.Tensor,
    mask: tf.Tensor,
    topn: int | None = None,
    smooth_fraction: float = 0.0,
) -> tf.Tensor:
    """LambdaLoss pair weights (Wang et al. 2018; TF-Ranking ``NDCGLambdaWeight``), detached.

    With ``r_i`` the 1-based rank of item ``i`` by ``scores`` among the valid items (the one
    hard ranking), gains ``g_i = l_i / IDCG`` (linear gain, ``IDCG = sum_r l_(r) / ln(r + 1)``
    over the valid labels sorted descending; 0 if ``IDCG <= 0``), ``D(r) = 1 / ln(r + 1)`` for
    ``r <= topn`` else 0, ``d = |r_i - r_j|``::

      u_ij = |D(d) - D(d + 1)|   if d > 0 and min(r_i, r_j) <= topn, else 0
      v_ij = |D(r_i) - D(r_j)|
      w_ij = m_i m_j |g_i - g_j| ((1 - mu) u_ij + mu v_ij),   mu = smooth_fraction

    Args:
      scores: float ``[batch_size, list_size]`` (only their order is used).
      labels: float ``[batch_size, list_size]``, higher = better.
      mask: 0/1 ``[batch_size, list_size]``.
      topn: rank cut-off (``None`` = no cut-off).
      smooth_fraction: ``mu`` in ``[0, 1]``.

    Returns:
      ``[batch_size, list_size, list_size]``, dtype of ``scores``, no gradient.
    """
    scores = tf.stop_gradient(tf.convert_to_tensor(scores))
    dtype = scores.dtype
    mu = _check_smooth_fraction(smooth_fraction)
    valid = masking.valid_mask(mask)
    n_items = tf.shape(scores)[1]
    top = tf.cast(n_items if topn is None else topn, dtype)
    mask = tf.cast(valid, dtype)
    labels = masking.where_valid(tf.stop_gradient(tf.cast(labels, dtype)), valid)
    ranks = tf.cast(common.hard_ranks(scores, valid), dtype)  # [B, N]

    # IDCG over the valid labels sorted descending.
    sorted_labels = tf.gather(labels, ranking.descending_order(labels, valid), batch_dims=1)
    positions = tf.cast(tf.range(1, n_items + 1), dtype)[None, :]
    n_valid = tf.reduce_sum(mask, axis=1, keepdims=True)
    ideal = sorted_labels * _discount(positions)
    ideal = tf.where(positions <= n_valid, ideal, tf.zeros_like(ideal))
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
    discount = (1.0 - mu) * u + mu * v
    weights = tf.abs(gains[:, :, None] - gains[:, None, :]) * discount * common.pair_mask(mask)
    return tf.stop_gradient(weights)


@dataclasses.dataclass(frozen=True)
class FsLambdaOptions(common.BaselineOptions):
    """Options of :func:`fs_lambdaloss_loss`.

    Attributes:
      quotas: serving quotas, first stage first; used only for the default ``topn``.
      topn: rank cut-off of the weights; ``None`` = the first stage's quota (the official
        two-stage code uses ``topn = 30``), or no cut-off when there is no quota.
      smooth_fraction: ``mu``. Default 0.75, the nearest value of the paper's grid
        {0, 0.25, 0.5, 0.75, 1}; the official code uses 0.8.
      gt_num: unused by the loss (kept for a uniform config).
    """

    quotas: tuple[int, ...] | None = None
    topn: int | None = None
    smooth_fraction: float = 0.75

    def validate(self) -> None:
        super().validate()
        if self.topn is not None:
            self._set("topn", validation.check_k("topn", self.topn, None))
        self._set("smooth_fraction", _check_smooth_fraction(self.smooth_fraction))


def fs_lambdaloss_loss(
    stage_logits: Sequence[tf.Tensor],
    labels: tf.Tensor,
    mask: tf.Tensor,
    *,
    options: FsLambdaOptions | None = None,
    **overrides: Any,
) -> contract.LossTerms:
    """``sum_s sum_{i,j} w_ij BCE(sigmoid(s_s,i - s_s,j), 1[l_i > l_j])`` per request.

    ``w`` = the detached :func:`lambda_pair_weights` of stage ``s``'s own ranking (linear gains
    = raw labels, ``topn`` cut-off, smoothing ``mu``). Ordered pairs are summed (each unordered
    pair twice with the same weight), not averaged, as coded. The official code ranks and
    builds gains over all slots (labels unmasked); here padded items are excluded.

    Returns:
      :class:`~lcron_tf.ops.contract.LossTerms` with the parts ``"stage/<s>"``.
    """
    opts = contract.resolve_options(FsLambdaOptions, options, overrides)
    logits, labels, mask, _, _ = common.prepare(
        stage_logits, labels, mask, opts, uses_gt_num=False
    )
    topn = opts.topn
    if topn is None and (opts.quotas is not None or len(logits) in common.RECFLOW_QUOTAS):
        topn = common.resolve_quotas(opts.quotas, len(logits), labels.shape[1], "FS-LambdaLoss")[0]
    targets = common.greater_pairs(labels)
    per_stage = []
    for x in logits:
        weights = lambda_pair_weights(x, labels, mask, topn, opts.smooth_fraction)
        per_stage.append(common.pairwise_logistic(x, targets, weights))
    return contract.LossTerms(tf.add_n(per_stage), common.stage_parts("stage", per_stage))


FS_LAMBDALOSS = contract.LossSpec(
    "fs_lambdaloss", fs_lambdaloss_loss, FsLambdaOptions, ("stage/*",)
)

__all__ = ["FS_LAMBDALOSS", "FsLambdaOptions", "fs_lambdaloss_loss", "lambda_pair_weights"]
