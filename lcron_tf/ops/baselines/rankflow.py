"""RankFlow baseline (Qin et al. 2022) as coded: joint training along the hard cascade (pure TF)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from lcron_tf.ops import contract, ranking
from lcron_tf.ops.baselines import common


@dataclasses.dataclass(frozen=True)
class RankFlowOptions(common.BaselineOptions):
    """Options of :func:`rankflow_loss`.

    Attributes:
      quotas: serving quotas, first stage first (default: RecFlow's for 2 / 3 stages).
      distill_weight: weight of the MSE distillation of each stage from the next (official: 1).
      rank_weight: weight of the ranking term; ``None`` = the official value for the stage
        count, 0 for 2 stages (``alpha = 0``) and 1 for 3+ stages.
      gt_num: size of the ground truth (the BCE positives).
    """

    quotas: tuple[int, ...] | None = None
    distill_weight: float = 1.0
    rank_weight: float | None = None

    def validate(self) -> None:
        super().validate()
        self._set("distill_weight", float(self.distill_weight))
        if self.rank_weight is not None:
            self._set("rank_weight", float(self.rank_weight))
        if self.distill_weight < 0 or (self.rank_weight is not None and self.rank_weight < 0):
            raise ValueError(
                "`distill_weight` and `rank_weight` must be >= 0. Received: "
                f"distill_weight={self.distill_weight!r}, rank_weight={self.rank_weight!r}"
            )


def _mean_over(v: tf.Tensor, members: tf.Tensor) -> tf.Tensor:
    return tf.math.divide_no_nan(tf.reduce_sum(v * members, axis=1), tf.reduce_sum(members, axis=1))


def rankflow_loss(
    stage_logits: Sequence[tf.Tensor],
    labels: tf.Tensor,
    mask: tf.Tensor,
    *,
    options: RankFlowOptions | None = None,
    **overrides: Any,
) -> contract.LossTerms:
    """RankFlow per request.

    With ``y`` the ground-truth indicator, ``A_0`` the valid candidates and
    ``A_s = top-q_s of A_{s-1} by s_s`` (the one hard ranking)::

      L = BCE(s_1 on A_0)
          + sum_{t>=2} [ BCE(s_t on A_{t-1})
                         + distill_weight * mean_{A_{t-1}} (stopgrad(s_t) - s_{t-1})**2
                         + rank_weight * -log sigmoid(mean_{A_t} s_{t-1}
                                                      - mean_{A_{t-1} \\ A_t} s_{t-1}) ]

    (each BCE and MSE a mean over its set). The official code trains all stages jointly in
    one pass (the paper's RankFlow alternates stages); this is the code's form. Its BCE/MSE
    are unmasked means over all slots; here means are over the valid items of each set.
    Needs at least 2 stages.

    Returns:
      :class:`~lcron_tf.ops.contract.LossTerms` with the parts ``"stage/<s>"`` (the terms
      that train stage ``s``'s scores: its BCE, plus its distillation and ranking terms).
    """
    opts = contract.resolve_options(RankFlowOptions, options, overrides)
    logits, labels, mask, valid, dtype = common.prepare(
        stage_logits, labels, mask, opts, min_stages=2
    )
    quotas = common.resolve_quotas(opts.quotas, len(logits), labels.shape[1], "RankFlow")
    rank_weight = opts.rank_weight
    if rank_weight is None:
        rank_weight = 0.0 if len(logits) == 2 else 1.0
    y = common.ground_truth_mass(labels, mask, opts.gt_num)

    parts = [common.masked_sigmoid_bce(logits[0], y, mask, tf.reduce_sum(mask, axis=1))]
    prev_set = ranking.topk_mask(logits[0], quotas[0], valid, dtype)
    for t in range(1, len(logits)):
        cur, prev = logits[t], logits[t - 1]
        parts.append(
            common.masked_sigmoid_bce(cur, y, prev_set, tf.reduce_sum(prev_set, axis=1))
        )
        if opts.distill_weight:  # trains the previous stage towards this one
            parts[t - 1] += opts.distill_weight * _mean_over(
                tf.square(tf.stop_gradient(cur) - prev), prev_set
            )
        kept = ranking.topk_mask(cur, quotas[t], prev_set > 0, dtype)
        if rank_weight:
            dropped = prev_set - kept
            both = tf.cast(
                (tf.reduce_sum(kept, axis=1) > 0) & (tf.reduce_sum(dropped, axis=1) > 0), dtype
            )
            margin = _mean_over(prev, kept) - _mean_over(prev, dropped)
            parts[t - 1] += rank_weight * both * -tf.math.log_sigmoid(margin)
        prev_set = kept
    return contract.LossTerms(tf.add_n(parts), common.stage_parts("stage", parts))


RANKFLOW = contract.LossSpec(
    "rankflow", rankflow_loss, RankFlowOptions, ("stage/*",), min_stages=2
)

__all__ = ["RANKFLOW", "RankFlowOptions", "rankflow_loss"]
