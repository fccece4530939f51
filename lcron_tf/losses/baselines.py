"""The seven baselines of the LCRON paper as Keras losses (lcron_method.md §5).

Every class is a :class:`~lcron_tf.losses.base.CascadeLoss`: per-stage scores (FIRST stage
first, e.g. ``[DSSM, DIN]`` or ``[DSSM, MLP, DIN]``), labels (higher = better) and a
0/1 mask in, one loss per request out; each plugs into ``CascadeModel`` / ``LcronTask``
like :class:`~lcron_tf.losses.LcronLoss`. The math lives in :mod:`lcron_tf.ops.baselines`
(and the shared sorting / top-k / label ops).

Common conventions (the "masked" semantics of this package):

* nothing depends on candidate positions. The official code hard-codes segments
  (first 10 = rank_pos, ...); here the ground truth is the ``gt_num`` best labels and
  "stage groups" are label tiers: the ground truth collapsed into one tier, then one
  tier per distinct label value (:func:`lcron_tf.ops.baselines.tier_labels`). On
  RecFlow-shaped labels (rank_pos 10..29 > 7 > 6 > 5) the tiers are exactly the official
  groups rank_pos / rank_neg / coarse_neg / prerank_neg;
* padded candidates (mask 0) never enter a sort, a top-k set, a pair or a mean, and get
  zero gradient; means are over the valid candidates, so on unpadded lists they equal
  the official means over ``N``;
* a stage's serving quota (``quotas``, first stage first) is needed by ICC, RankFlow,
  FS-LambdaLoss (its ``topn``) and ARF / ARF-v2 (their ``m``). ``quotas=None`` takes the
  RecFlow setups of the paper: ``(30, 20)`` for 2 stages, ``(40, 30, 20)`` for 3 (other
  stage counts must pass ``quotas``).

Where the official code deviates from the paper, the paper's form is the default and
the code's form an option; each docstring says which is which.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from lcron_tf._keras import register_serializable
from lcron_tf.losses.base import CascadeLoss, UncertaintyWeightedMixin
from lcron_tf.ops import baselines as bops
from lcron_tf.ops import labels as labels_ops
from lcron_tf.ops import sorting, topk, validation
from lcron_tf.ops.cascade import _check_inputs

# The serving quotas of the paper's RecFlow setups (lcron_method.md §1), first stage first.
RECFLOW_QUOTAS: dict[int, tuple[int, ...]] = {2: (30, 20), 3: (40, 30, 20)}


def _check_quotas(quotas: Sequence[int] | None) -> list[int] | None:
    if quotas is None:
        return None
    if isinstance(quotas, int | str) or not isinstance(quotas, Sequence):
        raise ValueError(
            "`quotas` must be a sequence of ints, one per stage, first stage first "
            f"(e.g. [30, 20]). Received: quotas={quotas!r}"
        )
    return [validation.check_k(f"quotas[{i}]", q, None) for i, q in enumerate(quotas)]


class _BaselineLoss(CascadeLoss):
    """Input checks, quota resolution and config shared by the baseline losses."""

    #: minimum number of stages the method makes sense for.
    min_stages = 1
    #: whether the loss uses ``gt_num`` (and so needs ``gt_num <= list_size``).
    uses_gt_num = True

    def __init__(self, gt_num: int = 10, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.gt_num = validation.check_k("gt_num", gt_num, None)

    def _prepare(
        self, stage_logits: Sequence[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> tuple[list[tf.Tensor], tf.Tensor, tf.Tensor]:
        logits, labels, mask, _ = _check_inputs(stage_logits, labels, mask)
        if len(logits) < self.min_stages:
            raise ValueError(
                f"{type(self).__name__} needs at least {self.min_stages} stages. "
                f"Received: {len(logits)} stage(s)"
            )
        if self.uses_gt_num:
            validation.check_k("gt_num", self.gt_num, labels.shape[1])
        return logits, labels, mask

    def _quotas(
        self, quotas: list[int] | None, num_stages: int, list_size: int | None
    ) -> list[int]:
        if quotas is None:
            if num_stages not in RECFLOW_QUOTAS:
                raise ValueError(
                    f"{type(self).__name__} needs `quotas` (one serving quota per stage, "
                    f"first stage first) for {num_stages} stages; defaults exist only for 2 "
                    "stages (30, 20) and 3 stages (40, 30, 20)."
                )
            quotas = list(RECFLOW_QUOTAS[num_stages])
        if len(quotas) != num_stages:
            raise ValueError(
                f"`quotas` must have one entry per stage ({num_stages} stages). "
                f"Received: quotas={quotas!r}"
            )
        return [validation.check_k(f"quotas[{i}]", q, list_size) for i, q in enumerate(quotas)]

    def get_config(self) -> dict:
        return {**super().get_config(), "gt_num": self.gt_num}


# ---------------------------------------------------------------------------------------
# BCE
# ---------------------------------------------------------------------------------------

BCE_NORMALIZE_CHOICES = ("valid", "list")


@register_serializable
class BceLoss(_BaselineLoss):
    """Independent pointwise BCE of every stage against the ground-truth indicator.

    ``L = sum_s sum_{i in T_s} m_i BCE(sigmoid(s_s,i), y_i) / Z_s`` with ``y_i`` = 1 for the
    ``gt_num`` best labels (:func:`~lcron_tf.ops.baselines.ground_truth_mass`), ``T_s`` the
    candidates stage ``s`` trains on and ``Z_s`` the normaliser. Stages have disjoint
    parameters, so the sum equals the official separate backward passes.

    Args:
      gt_num: size of the ground truth (the positives).
      train_tiers: ``None`` (default: every stage trains on all valid candidates) or one
        entry per stage, ``None`` or an int ``t``: the stage trains only on the candidates
        of the ``t`` best label tiers. The official code's sample selection is
        ``(None, 2)`` for 2 stages (DIN on rank_pos + rank_neg, DSSM on all 40) and
        ``(None, 4, 2)`` for 3 stages (DIN on 20, MLP on 40, DSSM on 50).
      normalize: ``"valid"`` (default: mean over the valid candidates of ``T_s``) or
        ``"list"`` (the official ``reduction='mean'`` with mask weights: divide by the slot
        count, padded slots included, i.e. ``list_size`` for a stage trained on the whole
        list; for a tier-restricted stage the padded slots of those tiers cannot be
        identified from labels and the valid count is used, equal on unpadded lists).
      **kwargs: ``reduction`` and ``name`` of ``keras.losses.Loss``.

    Returns ``[batch_size]`` per-request losses.
    """

    def __init__(
        self,
        gt_num: int = 10,
        train_tiers: Sequence[int | None] | None = None,
        normalize: str = "valid",
        name: str = "bce_loss",
        **kwargs: object,
    ) -> None:
        super().__init__(gt_num, name=name, **kwargs)
        if train_tiers is not None:
            if isinstance(train_tiers, int | str) or not isinstance(train_tiers, Sequence):
                raise ValueError(
                    "`train_tiers` must be None or a sequence with one entry (None or an int "
                    f">= 1) per stage. Received: train_tiers={train_tiers!r}"
                )
            train_tiers = [
                None if t is None else validation.check_k(f"train_tiers[{i}]", t, None)
                for i, t in enumerate(train_tiers)
            ]
        self.train_tiers = train_tiers
        self.normalize = validation.check_choice("normalize", normalize, BCE_NORMALIZE_CHOICES)

    def per_request(
        self, stage_logits: Sequence[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> tf.Tensor:
        logits, labels, mask = self._prepare(stage_logits, labels, mask)
        tiers = self.train_tiers or [None] * len(logits)
        if len(tiers) != len(logits):
            raise ValueError(
                f"`train_tiers` must have one entry per stage ({len(logits)} stages). "
                f"Received: train_tiers={self.train_tiers!r}"
            )
        y = bops.ground_truth_mass(labels, mask, self.gt_num)
        tier = None
        if any(t is not None for t in tiers):
            tier = bops.tier_index(bops.tier_labels(labels, mask, self.gt_num), mask)
        n_items = tf.cast(tf.shape(labels)[1], labels.dtype)
        total = tf.zeros_like(labels[:, 0])
        for x, t in zip(logits, tiers):
            weights = mask if t is None else mask * tf.cast(tier < t, labels.dtype)
            if self.normalize == "list" and t is None:
                norm = tf.fill(tf.shape(total), n_items)
            else:
                norm = tf.reduce_sum(weights, axis=1)
            total = total + bops.masked_sigmoid_bce(x, y, weights, norm)
        return total

    def get_config(self) -> dict:
        return {
            **super().get_config(), "train_tiers": self.train_tiers, "normalize": self.normalize
        }


# ---------------------------------------------------------------------------------------
# ICC
# ---------------------------------------------------------------------------------------

ICC_KAPPA_CHOICES = ("paper", "official")
ICC_PAIRS_CHOICES = ("distinct", "index_order")


@register_serializable
class IccLoss(_BaselineLoss):
    """ICC (Gallagher et al. 2019): RankNet on the indicator-fused cascade score.

    ``s_ens`` is :func:`~lcron_tf.ops.baselines.icc_fused_score` (stage indicators
    ``sigmoid((s - kappa_s) / sigma)``, ``kappa_s`` the ``k_s``-th largest valid score), and::

      L = sum_{i,j} W_ij BCE(sigmoid(s_ens,i - s_ens,j), t_ij) / n_valid**2

    Args:
      quotas: serving quotas, first stage first (default: RecFlow's, see the module).
      sigma: indicator temperature. Default 1e-3, the official code's value (the paper's
        grid is {0.05, 0.1, 0.5, 1.0}; pass one of those for the paper's search space).
      kappa: ``"paper"`` (default): ``k_s = quotas[s]``. ``"official"``: the code's
        ``k``: the last stage reuses the previous stage's quota (2 stages: 30/30 instead of
        30/20; 3 stages: 40/30/30 instead of 40/30/20).
      pairs: ``"distinct"`` (default): every pair of valid items with different labels
        once, target 1 for the better one; ties are ignored. ``"index_order"``: the
        official upper triangle ``i < j`` in index order with target ``1[l_i > l_j]``, so
        a tie pushes the earlier item below the later one.
      scales: per-stage factors ``c_s`` of the fused score; ``None`` = the official ones,
        ``(1, 1)`` for 2 stages, ``(1, 2, 4)`` for 3, ``2**s`` beyond.
      **kwargs: ``gt_num`` (unused by the loss, kept for a uniform config), ``reduction``
        and ``name``.

    The official loss ignores the mask and divides by ``N**2``; here only pairs of valid
    items count and the divisor is ``n_valid**2`` (equal on unpadded lists). The paper's
    LambdaRank pair weights are not in the official code and not implemented here.
    Needs at least 2 stages. Returns ``[batch_size]``.
    """

    min_stages = 2
    uses_gt_num = False

    def __init__(
        self,
        quotas: Sequence[int] | None = None,
        sigma: float = 1e-3,
        kappa: str = "paper",
        pairs: str = "distinct",
        scales: Sequence[float] | None = None,
        name: str = "icc_loss",
        **kwargs: object,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.quotas = _check_quotas(quotas)
        self.sigma = validation.check_positive("sigma", sigma)
        self.kappa = validation.check_choice("kappa", kappa, ICC_KAPPA_CHOICES)
        self.pairs = validation.check_choice("pairs", pairs, ICC_PAIRS_CHOICES)
        self.scales = None if scales is None else [float(c) for c in scales]

    def stage_ks(self, num_stages: int, list_size: int | None) -> list[int]:
        """The cut-off ``k`` of each stage's indicator under the ``kappa`` option."""
        ks = self._quotas(self.quotas, num_stages, list_size)
        if self.kappa == "official":
            ks = ks[:-1] + [ks[-2]]
        return ks

    def per_request(
        self, stage_logits: Sequence[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> tf.Tensor:
        logits, labels, mask = self._prepare(stage_logits, labels, mask)
        num = len(logits)
        scales = self.scales
        if scales is None:
            scales = [1.0, 1.0] if num == 2 else [2.0**s for s in range(num)]
        fused = bops.icc_fused_score(
            logits, self.stage_ks(num, labels.shape[1]), mask, self.sigma, scales
        )
        valid_pairs = bops.pair_mask(mask)
        greater = bops.greater_pairs(labels)
        if self.pairs == "distinct":
            weights, targets = valid_pairs * greater, tf.ones_like(greater)
        else:
            upper = tf.linalg.band_part(tf.ones_like(greater), 0, -1)  # i <= j
            weights, targets = valid_pairs * upper, greater
        n = tf.reduce_sum(mask, axis=1)
        return tf.math.divide_no_nan(bops.pairwise_logistic(fused, targets, weights), n * n)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "quotas": self.quotas,
            "sigma": self.sigma,
            "kappa": self.kappa,
            "pairs": self.pairs,
            "scales": self.scales,
        }


# ---------------------------------------------------------------------------------------
# RankFlow
# ---------------------------------------------------------------------------------------


@register_serializable
class RankFlowLoss(_BaselineLoss):
    """RankFlow (Qin et al. 2022) as coded: joint training along the hard cascade.

    With ``y`` the ground-truth indicator, ``A_0`` the valid candidates and
    ``A_s = top-q_s of A_{s-1} by s_s``::

      L = BCE(s_1 on A_0)
          + sum_{t>=2} [ BCE(s_t on A_{t-1})
                         + distill_weight * mean_{A_{t-1}} (stopgrad(s_t) - s_{t-1})**2
                         + rank_weight * -log sigmoid(mean_{A_t} s_{t-1}
                                                      - mean_{A_{t-1} \\ A_t} s_{t-1}) ]

    (each BCE and MSE a mean over its set). The official code trains all stages jointly
    in one pass (the paper's RankFlow alternates stages); this is the code's form.

    Args:
      quotas: serving quotas, first stage first (default: RecFlow's).
      gt_num: size of the ground truth (the BCE positives).
      distill_weight: weight of the MSE distillation of each stage from the next one
        (official: 1).
      rank_weight: weight of the ranking term; ``None`` = the official value for the
        stage count, 0 for 2 stages (``alpha = 0``) and 1 for 3+ stages. (The official
        2-stage ranking term splits DIN's top-10 from the other 20; it has weight 0
        there, and the 3-stage split top-q vs the rest is used here.)
      **kwargs: ``reduction`` and ``name``.

    The official BCE/MSE are unmasked means over all slots; here means are over the
    valid items of each set. Needs at least 2 stages. Returns ``[batch_size]``.
    """

    min_stages = 2

    def __init__(
        self,
        quotas: Sequence[int] | None = None,
        gt_num: int = 10,
        distill_weight: float = 1.0,
        rank_weight: float | None = None,
        name: str = "rankflow_loss",
        **kwargs: object,
    ) -> None:
        super().__init__(gt_num, name=name, **kwargs)
        self.quotas = _check_quotas(quotas)
        self.distill_weight = float(distill_weight)
        self.rank_weight = None if rank_weight is None else float(rank_weight)
        if self.distill_weight < 0 or (self.rank_weight is not None and self.rank_weight < 0):
            raise ValueError(
                "`distill_weight` and `rank_weight` must be >= 0. Received: "
                f"distill_weight={distill_weight!r}, rank_weight={rank_weight!r}"
            )

    def per_request(
        self, stage_logits: Sequence[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> tf.Tensor:
        logits, labels, mask = self._prepare(stage_logits, labels, mask)
        quotas = self._quotas(self.quotas, len(logits), labels.shape[1])
        rank_weight = self.rank_weight
        if rank_weight is None:
            rank_weight = 0.0 if len(logits) == 2 else 1.0
        y = bops.ground_truth_mass(labels, mask, self.gt_num)

        def mean_over(v: tf.Tensor, members: tf.Tensor) -> tf.Tensor:
            return tf.math.divide_no_nan(
                tf.reduce_sum(v * members, axis=1), tf.reduce_sum(members, axis=1)
            )

        total = bops.masked_sigmoid_bce(logits[0], y, mask, tf.reduce_sum(mask, axis=1))
        prev_set = bops.topk_mask(logits[0], quotas[0], mask)
        for t in range(1, len(logits)):
            cur, prev = logits[t], logits[t - 1]
            total += bops.masked_sigmoid_bce(cur, y, prev_set, tf.reduce_sum(prev_set, axis=1))
            if self.distill_weight:
                total += self.distill_weight * mean_over(
                    tf.square(tf.stop_gradient(cur) - prev), prev_set
                )
            kept = bops.topk_mask(cur, quotas[t], prev_set)
            if rank_weight:
                dropped = prev_set - kept
                both = tf.cast(
                    (tf.reduce_sum(kept, axis=1) > 0) & (tf.reduce_sum(dropped, axis=1) > 0),
                    cur.dtype,
                )
                margin = mean_over(prev, kept) - mean_over(prev, dropped)
                total += rank_weight * both * -tf.math.log_sigmoid(margin)
            prev_set = kept
        return total

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "quotas": self.quotas,
            "distill_weight": self.distill_weight,
            "rank_weight": self.rank_weight,
        }


# ---------------------------------------------------------------------------------------
# FS-RankNet
# ---------------------------------------------------------------------------------------

FS_GROUP_CHOICES = ("tiers", "labels")


@register_serializable
class FsRankNetLoss(_BaselineLoss):
    """Full-stage RankNet (FS-LTR, Zheng et al. 2024) over label tiers, every stage.

    ``L = sum_s sum_g mean_{i in g, j below g} softplus(s_s,j - s_s,i)``: each tier ``g``
    against all lower tiers, each term a mean over its pairs, no pairs inside a tier
    (:func:`~lcron_tf.ops.baselines.group_pair_weights`).

    Mapping onto the official stage groups: with ``groups="tiers"`` (default) the tiers
    are the ground truth (``gt_num`` best labels) as one group, then one group per
    distinct label value; on RecFlow-shaped labels (rank_pos 10..29 > 7 > 6 > 5) these
    are rank_pos / rank_neg / coarse_neg / prerank_neg, and the three terms are the
    official ``rank_pos vs 30 lower / 30``, ``rank_neg vs 20 lower / 20``, ``coarse vs 10
    lower / 10`` (4 terms with 5 groups in three-stage). ``groups="labels"`` uses every
    distinct raw label as its own group (pairs ``l_i > l_j``, ordering the ground truth
    internally too).

    Masking: only pairs of two valid items count, and each term is normalised per
    request by its valid pair count. The official two-stage code weights pairs by the
    mask of the higher item only and divides by the batch-summed count of higher items;
    the official three-stage code ignores masks altogether. Both equal this loss on
    unpadded lists.

    Args:
      gt_num: size of the ground-truth tier.
      groups: ``"tiers"`` or ``"labels"``.
      **kwargs: ``reduction`` and ``name``.

    Returns ``[batch_size]``.
    """

    def __init__(
        self, gt_num: int = 10, groups: str = "tiers", name: str = "fs_ranknet_loss",
        **kwargs: object,
    ) -> None:
        super().__init__(gt_num, name=name, **kwargs)
        self.groups = validation.check_choice("groups", groups, FS_GROUP_CHOICES)

    def per_request(
        self, stage_logits: Sequence[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> tf.Tensor:
        logits, labels, mask = self._prepare(stage_logits, labels, mask)
        values = bops.tier_labels(labels, mask, self.gt_num) if self.groups == "tiers" else labels
        weights = bops.group_pair_weights(values, mask)
        ones = tf.ones_like(weights)
        return tf.add_n([bops.pairwise_logistic(x, ones, weights) for x in logits])

    def get_config(self) -> dict:
        return {**super().get_config(), "groups": self.groups}


# ---------------------------------------------------------------------------------------
# FS-LambdaLoss
# ---------------------------------------------------------------------------------------


@register_serializable
class FsLambdaLoss(_BaselineLoss):
    """Full-stage LambdaLoss (TF-Ranking's LambdaLoss, NDCG weights), every stage.

    ``L = sum_s sum_{i,j} w_ij BCE(sigmoid(s_s,i - s_s,j), 1[l_i > l_j])`` with the detached
    :func:`~lcron_tf.ops.baselines.lambda_pair_weights` of stage ``s``'s own ranking
    (linear gains = raw labels, ``topn`` cut-off, smoothing ``mu``). Ordered pairs are
    summed (each unordered pair twice with the same weight), not averaged, as coded.

    Args:
      quotas: serving quotas, first stage first; used only for the default ``topn``.
      topn: rank cut-off of the weights; ``None`` = the first stage's quota (the official
        two-stage code uses ``topn = 30``), or the list size when there is no quota.
      smooth_fraction: ``mu``. Default 0.75, the nearest value of the paper's grid
        {0, 0.25, 0.5, 0.75, 1}; the official code uses 0.8 (pass ``smooth_fraction=0.8``).
      **kwargs: ``gt_num`` (unused), ``reduction`` and ``name``.

    The official code ranks and builds gains over all slots (labels unmasked); here
    padded items are excluded. Returns ``[batch_size]``.
    """

    uses_gt_num = False

    def __init__(
        self,
        quotas: Sequence[int] | None = None,
        topn: int | None = None,
        smooth_fraction: float = 0.75,
        name: str = "fs_lambdaloss",
        **kwargs: object,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.quotas = _check_quotas(quotas)
        self.topn = None if topn is None else validation.check_k("topn", topn, None)
        if not 0.0 <= float(smooth_fraction) <= 1.0:
            raise ValueError(
                "`smooth_fraction` must be in [0, 1]. "
                f"Received: smooth_fraction={smooth_fraction!r}"
            )
        self.smooth_fraction = float(smooth_fraction)

    def per_request(
        self, stage_logits: Sequence[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> tf.Tensor:
        logits, labels, mask = self._prepare(stage_logits, labels, mask)
        topn = self.topn
        if topn is None and (self.quotas is not None or len(logits) in RECFLOW_QUOTAS):
            topn = self._quotas(self.quotas, len(logits), labels.shape[1])[0]
        targets = bops.greater_pairs(labels)
        losses = []
        for x in logits:
            weights = bops.lambda_pair_weights(x, labels, mask, topn, self.smooth_fraction)
            losses.append(bops.pairwise_logistic(x, targets, weights))
        return tf.add_n(losses)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "quotas": self.quotas,
            "topn": self.topn,
            "smooth_fraction": self.smooth_fraction,
        }


# ---------------------------------------------------------------------------------------
# ARF and ARF-v2
# ---------------------------------------------------------------------------------------


@register_serializable
class ArfLoss(UncertaintyWeightedMixin, _BaselineLoss):
    """ARF (Wang et al. 2024, Adaptive Neural Ranking Framework), per stage, summed.

    For stage ``s`` with quota ``m = quotas[s]``, ``P`` = NeuralSort of its scores over the
    valid items (temperature ``tau``), ``Lab`` the soft label permutation matrix and
    ``y`` the ground-truth mass (first ``gt_num`` label rows), per request::

      L_global_s = sum_{r,i} -Lab[r, i] ln(P[r, i] + eps) / n**2
      L_relax_s  = sum_i -y_i ln(mean_{r<m} P[r, i] + eps) / n * 1[n > m]
      L          = sum_s L_relax_s + sum_s 0.5 / sigma_s**2 * L_global_s + ln prod_s sigma_s

    ``sigma_s`` (the official ``global_weight``, one per stage, init 1) live in an
    :class:`~lcron_tf.layers.UncertaintyWeighting` held by ``self.weighting``, trained like
    LCRON's (``LcronTask`` / ``CascadeModel`` track it; ``learn_weights=False`` fixes them).

    Args:
      quotas: serving quotas, first stage first = each stage's ``m`` (official: 30/20 and
        40/30/20; default: RecFlow's).
      gt_num: size of the ground truth (official ``top_k = 10``).
      tau: NeuralSort temperature. Default 200, the value hard-coded in the official code
        (its ``--tau`` flag is ignored); the paper searches {1, 20, 50, 100, 200, 1000}.
      learn_weights: learn the ``sigma_s``.
      init_sigma: initial ``sigma_s``.
      **kwargs: ``reduction`` and ``name``.

    Differences from the official code (equal on unpadded lists): padded items are
    excluded from the sort (the code sorts them and masks with a prefix mask), means are
    over the ``n`` valid items (code: ``N``), and ``L_global`` is not restricted to full
    lists (code: gated by ``count >= N``). Returns ``[batch_size]``.
    """

    def __init__(
        self,
        quotas: Sequence[int] | None = None,
        gt_num: int = 10,
        tau: float = 200.0,
        learn_weights: bool = True,
        init_sigma: float = 1.0,
        name: str = "arf_loss",
        **kwargs: object,
    ) -> None:
        super().__init__(gt_num, name=name, **kwargs)
        self.quotas = _check_quotas(quotas)
        self.tau = validation.check_positive("tau", tau)
        self._init_weighting(learn_weights, init_sigma, name)

    def relax(
        self, x: tf.Tensor, perm: tf.Tensor, labels: tf.Tensor, mask: tf.Tensor, m: int
    ) -> tf.Tensor:
        """``L_relax`` of one stage, ``[batch_size]`` (ARF: mean-row relaxed top-m NLL)."""
        n = tf.reduce_sum(mask, axis=1)
        y = bops.ground_truth_mass(labels, mask, self.gt_num)
        nll = bops.relaxed_topk_mean_nll(perm, y, m, mask)
        return tf.math.divide_no_nan(nll, n) * tf.cast(n > m, x.dtype)

    def terms(
        self, stage_logits: Sequence[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> dict:
        """Per-request parts: ``"relax"`` and ``"global"`` (lists of ``[B]``, one per stage),
        ``"per_request"`` ``[B]`` (the weighted total) and ``"sigma"`` ``[num_stages]``."""
        logits, labels, mask = self._prepare(stage_logits, labels, mask)
        quotas = self._quotas(self.quotas, len(logits), labels.shape[1])
        n = tf.reduce_sum(mask, axis=1)
        label_perm = labels_ops.label_permutation_matrix(labels, mask)
        relax, glob = [], []
        for x, m in zip(logits, quotas):
            perm = sorting.neural_sort(x, self.tau, mask)
            ce = bops.permutation_cross_entropy(perm, label_perm)
            glob.append(tf.math.divide_no_nan(ce, n * n))
            relax.append(self.relax(x, perm, labels, mask, m))
        stacked = tf.stack(glob, axis=1)  # [B, S]
        weighted = self._weighted(stacked)
        return {
            "relax": relax,
            "global": glob,
            "per_request": tf.add_n(relax) + weighted,
            "sigma": self.weighting.sigma,
        }

    def per_request(
        self, stage_logits: Sequence[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> tf.Tensor:
        return self.terms(stage_logits, labels, mask)["per_request"]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "quotas": self.quotas,
            "tau": self.tau,
            **self._weighting_config(),
        }


@register_serializable
class ArfV2Loss(ArfLoss):
    """ARF-v2: ARF with ``L_relax`` replaced by LCRON's ``L_single`` at ``m`` rows.

    ``L_relax_s = sum_i [-y_i ln(up_i + eps) - z_i ln(down_i + eps)] / n * 1[n > m]`` with
    ``up``/``down`` the detached-normalised mass of rows ``< m`` / ``>= m``
    (:func:`lcron_tf.ops.normalized_up_down`, ``k = m``), ``y``/``z`` the label mass of rows
    ``< gt_num`` / ``>= gt_num``. With ``m = gt_num`` this is exactly LCRON's ``L_single``.
    Everything else (``L_global``, the weights, the arguments, ``tau = 200``) is as
    :class:`ArfLoss`.
    """

    def __init__(self, *args: object, name: str = "arf_v2_loss", **kwargs: object) -> None:
        super().__init__(*args, name=name, **kwargs)

    def relax(
        self, x: tf.Tensor, perm: tf.Tensor, labels: tf.Tensor, mask: tf.Tensor, m: int
    ) -> tf.Tensor:
        n = tf.reduce_sum(mask, axis=1)
        y = bops.ground_truth_mass(labels, mask, self.gt_num)
        z = labels_ops.label_row_mass(labels, self.gt_num, n, mask)
        up, down = topk.normalized_up_down(
            x, m, tau=self.tau, sort="neural", row_limit=n, col_mask=mask, sort_mask=mask
        )
        items = mask * (-y * tf.math.log(up + topk.EPS) - z * tf.math.log(down + topk.EPS))
        return tf.math.divide_no_nan(tf.reduce_sum(items, axis=1), n) * tf.cast(n > m, x.dtype)


__all__ = [
    "RECFLOW_QUOTAS",
    "ArfLoss",
    "ArfV2Loss",
    "BceLoss",
    "FsLambdaLoss",
    "FsRankNetLoss",
    "IccLoss",
    "RankFlowLoss",
]
