"""FS-RankNet baseline: full-stage RankNet (FS-LTR, Zheng et al. 2024) over label tiers."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from lcron_tf.ops import contract, validation
from lcron_tf.ops.baselines import common

FS_GROUP_CHOICES = ("tiers", "labels")


@dataclasses.dataclass(frozen=True)
class FsRankNetOptions(common.BaselineOptions):
    """Options of :func:`fs_ranknet_loss`.

    Attributes:
      gt_num: size of the ground-truth tier.
      groups: ``"tiers"``: the ground truth (``gt_num`` best labels) as one group, then one
        group per distinct label value; on RecFlow-shaped labels (rank_pos 10..29 > 7 > 6 > 5)
        these are rank_pos / rank_neg / coarse_neg / prerank_neg, the official groups.
        ``"labels"``: every distinct raw label is its own group (pairs ``l_i > l_j``, ordering
        the ground truth internally too).
    """

    groups: str = "tiers"

    def validate(self) -> None:
        super().validate()
        validation.check_choice("groups", self.groups, FS_GROUP_CHOICES)


def fs_ranknet_loss(
    stage_logits: Sequence[tf.Tensor],
    labels: tf.Tensor,
    mask: tf.Tensor,
    *,
    options: FsRankNetOptions | None = None,
    **overrides: Any,
) -> contract.LossTerms:
    """``sum_s sum_g mean_{i in g, j below g} softplus(s_s,j - s_s,i)`` per request.

    Each group ``g`` against all lower groups, each term a mean over its pairs, no pairs
    inside a group (:func:`common.group_pair_weights`): the official terms ``rank_pos vs 30
    lower / 30``, ``rank_neg vs 20 lower / 20``, ``coarse vs 10 lower / 10`` (4 terms with 5
    groups in three-stage). Only pairs of two valid items count, each term normalised per
    request by its valid pair count; the official two-stage code weights pairs by the mask of
    the higher item only and divides by a batch-summed count, the three-stage code ignores
    masks. Both equal this loss on unpadded lists.

    Returns:
      :class:`~lcron_tf.ops.contract.LossTerms` with the parts ``"stage/<s>"``.
    """
    opts = contract.resolve_options(FsRankNetOptions, options, overrides)
    logits, labels, mask, _, _ = common.prepare(stage_logits, labels, mask, opts)
    gt_num = opts.gt_num if opts.groups == "tiers" else None
    weights = common.group_pair_weights(labels, mask, gt_num)
    ones = tf.ones_like(weights)
    per_stage = [common.pairwise_logistic(x, ones, weights) for x in logits]
    return contract.LossTerms(tf.add_n(per_stage), common.stage_parts("stage", per_stage))


FS_RANKNET = contract.LossSpec("fs_ranknet", fs_ranknet_loss, FsRankNetOptions, ("stage/*",))

__all__ = ["FS_GROUP_CHOICES", "FS_RANKNET", "FsRankNetOptions", "fs_ranknet_loss"]
