"""ICC baseline (Gallagher et al. 2019): RankNet on the indicator-fused cascade score (pure TF)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from lcron_tf.ops import contract, masking, validation
from lcron_tf.ops.baselines import common

ICC_KAPPA_CHOICES = ("paper", "official")
ICC_PAIRS_CHOICES = ("distinct", "index_order")


def kth_largest(scores: tf.Tensor, k: int, mask: tf.Tensor) -> tf.Tensor:
    """ICC's cut-off ``kappa``: the ``k``-th largest valid score of each request.

    Differentiable (the gradient goes to the item holding the k-th score, as in the
    official ``torch.gather`` of the top-k values). With fewer than ``k`` valid items it is
    ``min(valid scores) - 1`` (detached), below every valid score.

    Args:
      scores: float ``[batch_size, list_size]``.
      k: int, ``1 <= k <= list_size``.
      mask: 0/1 ``[batch_size, list_size]``.

    Returns:
      ``[batch_size, 1]``, dtype of ``scores``.
    """
    scores = tf.convert_to_tensor(scores)
    k = validation.check_k("k", k, scores.shape[1])
    key = masking.padded_last_key(scores, masking.valid_mask(mask))
    if scores.shape[1] is None:  # list size known only at run time: it may be < k
        floor = tf.reduce_min(key, axis=1, keepdims=True) - 1.0
        extra = tf.maximum(k - tf.shape(key)[1], 0)
        key = tf.concat([key, tf.tile(tf.stop_gradient(floor), [1, extra])], axis=1)
    values = tf.math.top_k(key, k=k, sorted=True).values
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
    """ICC's ensemble score of a cascade (as coded in kwai/LCRON).

    With ``I_s = sigmoid((s_s - kappa_s) / sigma)``, ``kappa_s`` the ``ks[s]``-th largest
    score of stage ``s``, ``G_s = prod_{t<s} I_t`` (``G_1 = 1``) and ``c_s = scales[s]``::

      s_ens = sum_{s<S} c_s * G_s * (1 - I_s) * s_s  +  c_S * G_S * I_S * s_S

    An item dropped at stage ``s`` is scored by stage ``s``; a survivor of every stage by the
    last one. The official two-stage code uses ``c = (1, 1)``, the three-stage one
    ``c = (1, 2, 4)``. A stage with fewer than ``k_s`` valid candidates keeps them all.

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
        ind = tf.where(n_valid < k, tf.ones_like(ind), ind)  # fewer than k: keep them all
        if s < num - 1:
            fused = fused + c * gate * (1.0 - ind) * x
            gate = gate * ind
        else:
            fused = fused + c * gate * ind * x
    return fused


@dataclasses.dataclass(frozen=True)
class IccOptions(common.BaselineOptions):
    """Options of :func:`icc_loss`.

    Attributes:
      quotas: serving quotas, first stage first (default: RecFlow's for 2 / 3 stages).
      sigma: indicator temperature. Default 1e-3, the official code's value (the paper's
        grid is {0.05, 0.1, 0.5, 1.0}).
      kappa: ``"paper"``: ``k_s = quotas[s]``. ``"official"``: the code's ``k``: the last
        stage reuses the previous stage's quota (2 stages: 30/30; 3 stages: 40/30/30).
      pairs: ``"distinct"``: every pair of valid items with different labels once, target 1
        for the better one; ties ignored. ``"index_order"``: the official upper triangle
        ``i < j`` in index order with target ``1[l_i > l_j]`` (a tie pushes the earlier item
        below the later one).
      scales: per-stage factors ``c_s`` of the fused score; ``None`` = the official ones,
        ``(1, 1)`` for 2 stages, ``(1, 2, 4)`` for 3, ``2**s`` beyond.
      gt_num: unused by the loss (kept for a uniform config).
    """

    quotas: tuple[int, ...] | None = None
    sigma: float = 1e-3
    kappa: str = "paper"
    pairs: str = "distinct"
    scales: tuple[float, ...] | None = None

    def validate(self) -> None:
        super().validate()
        self._set("sigma", validation.check_positive("sigma", self.sigma))
        validation.check_choice("kappa", self.kappa, ICC_KAPPA_CHOICES)
        validation.check_choice("pairs", self.pairs, ICC_PAIRS_CHOICES)
        if self.scales is not None:
            self._set("scales", tuple(float(c) for c in self.scales))

    def stage_ks(self, num_stages: int, list_size: int | None) -> list[int]:
        """The cut-off ``k`` of each stage's indicator under the ``kappa`` option."""
        ks = common.resolve_quotas(self.quotas, num_stages, list_size, "ICC")
        if self.kappa == "official":
            ks = ks[:-1] + [ks[-2]]
        return ks


def icc_loss(
    stage_logits: Sequence[tf.Tensor],
    labels: tf.Tensor,
    mask: tf.Tensor,
    *,
    options: IccOptions | None = None,
    **overrides: Any,
) -> contract.LossTerms:
    """``sum_{i,j} W_ij BCE(sigmoid(s_ens,i - s_ens,j), t_ij) / n_valid**2`` per request.

    ``s_ens`` is :func:`icc_fused_score`. The official loss ignores the mask and divides by
    ``N**2``; here only pairs of valid items count and the divisor is ``n_valid**2`` (equal on
    unpadded lists). The paper's LambdaRank pair weights are not in the official code and not
    implemented. Needs at least 2 stages.

    Returns:
      :class:`~lcron_tf.ops.contract.LossTerms` (no parts).
    """
    opts = contract.resolve_options(IccOptions, options, overrides)
    logits, labels, mask, _, _ = common.prepare(
        stage_logits, labels, mask, opts, min_stages=2, uses_gt_num=False
    )
    num = len(logits)
    scales = opts.scales
    if scales is None:
        scales = [1.0, 1.0] if num == 2 else [2.0**s for s in range(num)]
    fused = icc_fused_score(logits, opts.stage_ks(num, labels.shape[1]), mask, opts.sigma, scales)
    valid_pairs = common.pair_mask(mask)
    greater = common.greater_pairs(labels)
    if opts.pairs == "distinct":
        weights, targets = valid_pairs * greater, tf.ones_like(greater)
    else:
        upper = tf.linalg.band_part(tf.ones_like(greater), 0, -1)  # i <= j
        weights, targets = valid_pairs * upper, greater
    n = tf.reduce_sum(mask, axis=1)
    per_request = tf.math.divide_no_nan(common.pairwise_logistic(fused, targets, weights), n * n)
    return contract.LossTerms(per_request, {})


ICC = contract.LossSpec("icc", icc_loss, IccOptions, (), min_stages=2)

__all__ = [
    "ICC",
    "ICC_KAPPA_CHOICES",
    "ICC_PAIRS_CHOICES",
    "IccOptions",
    "icc_fused_score",
    "icc_loss",
    "kth_largest",
    "soft_indicator",
]
