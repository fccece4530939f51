"""BCE baseline: independent pointwise BCE of every stage against the ground truth (pure TF)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from lcron_tf.ops import contract, validation
from lcron_tf.ops.baselines import common

BCE_NORMALIZE_CHOICES = ("valid", "list")


@dataclasses.dataclass(frozen=True)
class BceOptions(common.BaselineOptions):
    """Options of :func:`bce_loss`.

    Attributes:
      gt_num: size of the ground truth (the positives).
      train_tiers: ``None`` (every stage trains on all valid candidates) or one entry per
        stage, ``None`` or an int ``t``: the stage trains only on the candidates of the ``t``
        best label tiers. The official sample selection is ``(None, 2)`` for 2 stages (DIN on
        rank_pos + rank_neg, DSSM on all 40) and ``(None, 4, 2)`` for 3 stages.
      normalize: ``"valid"`` (mean over the valid candidates of each stage's set) or
        ``"list"`` (the official ``reduction='mean'`` with mask weights: divide by the slot
        count ``list_size``, padded slots included, for a stage trained on the whole list; a
        tier-restricted stage divides by its valid count, equal on unpadded lists).
    """

    train_tiers: tuple[int | None, ...] | None = None
    normalize: str = "valid"

    def validate(self) -> None:
        super().validate()
        tiers = self.train_tiers
        if tiers is not None:
            if isinstance(tiers, int | str) or not isinstance(tiers, Sequence):
                raise ValueError(
                    "`train_tiers` must be None or a sequence with one entry (None or an int "
                    f">= 1) per stage. Received: train_tiers={tiers!r}"
                )
            self._set("train_tiers", tuple(
                None if t is None else validation.check_k(f"train_tiers[{i}]", t, None)
                for i, t in enumerate(tiers)
            ))
        validation.check_choice("normalize", self.normalize, BCE_NORMALIZE_CHOICES)

    @classmethod
    def schema_defaults(
        cls, schema: Any, quotas: Sequence[int] | None, overrides: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Also the official sample selection when the schema has RecFlow-shaped groups."""
        out = super().schema_defaults(schema, quotas, overrides)
        groups = getattr(schema, "stage_groups", None)
        q = quotas if quotas is not None else getattr(schema, "quotas", None)
        if groups and q is not None and len(groups) == len(q) + 2 and len(q) in (2, 3):
            out["train_tiers"] = [None, 2] if len(q) == 2 else [None, 4, 2]
        return out


def bce_loss(
    stage_logits: Sequence[tf.Tensor],
    labels: tf.Tensor,
    mask: tf.Tensor,
    *,
    options: BceOptions | None = None,
    **overrides: Any,
) -> contract.LossTerms:
    """``sum_s sum_{i in T_s} m_i BCE(sigmoid(s_s,i), y_i) / Z_s`` per request.

    ``y_i`` = 1 for the ``gt_num`` best labels (:func:`common.ground_truth_mass`), ``T_s`` the
    candidates stage ``s`` trains on and ``Z_s`` the normaliser (see :class:`BceOptions`).
    Stages have disjoint parameters, so the sum equals the official separate backward passes.

    Returns:
      :class:`~lcron_tf.ops.contract.LossTerms` with the parts ``"stage/<s>"``.
    """
    opts = contract.resolve_options(BceOptions, options, overrides)
    logits, labels, mask, _, dtype = common.prepare(stage_logits, labels, mask, opts)
    tiers = opts.train_tiers or (None,) * len(logits)
    if len(tiers) != len(logits):
        raise ValueError(
            f"`train_tiers` must have one entry per stage ({len(logits)} stages). "
            f"Received: train_tiers={list(opts.train_tiers)!r}"
        )
    y = common.ground_truth_mass(labels, mask, opts.gt_num)
    tier = None
    if any(t is not None for t in tiers):
        tier = common.tier_index(labels, mask, opts.gt_num)
    n_items = tf.cast(tf.shape(labels)[1], dtype)
    per_stage = []
    for x, t in zip(logits, tiers):
        weights = mask if t is None else mask * tf.cast(tier < t, dtype)
        if opts.normalize == "list" and t is None:
            norm = tf.fill(tf.shape(labels)[:1], n_items)
        else:
            norm = tf.reduce_sum(weights, axis=1)
        per_stage.append(common.masked_sigmoid_bce(x, y, weights, norm))
    return contract.LossTerms(tf.add_n(per_stage), common.stage_parts("stage", per_stage))


BCE = contract.LossSpec("bce", bce_loss, BceOptions, ("stage/*",))

__all__ = ["BCE", "BCE_NORMALIZE_CHOICES", "BceOptions", "bce_loss"]
