"""Math shared by the baselines of the LCRON paper (pure TF; lcron_method.md §5).

Every function works on one batch of requests, ``[batch_size, list_size]`` (``B``, ``N``)
tensors, with an explicit 0/1 ``mask`` (1 = real candidate). Padded candidates are excluded
everywhere: from hard ranks and top-k sets (the one hard ranking,
:mod:`lcron_tf.ops.ranking`), from pairs, from label tiers and label matrices. The loss
functions call them on inputs prepared by :func:`lcron_tf.ops.contract.prepare_inputs`, whose
padded slots are already replaced, so every value here is finite.

Contents: the options shared by the baselines (:class:`BaselineOptions`, quotas), hard
ranks, the ground-truth mass, label tiers and pair relations (the official stage groups),
pairwise logistic losses, and the masked sigmoid BCE.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from lcron_tf.ops import contract, masking, ranking, validation
from lcron_tf.ops import labels as labels_ops

# The serving quotas of the paper's RecFlow setups (lcron_method.md §1), first stage first.
RECFLOW_QUOTAS: dict[int, tuple[int, ...]] = {2: (30, 20), 3: (40, 30, 20)}


# ---------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------


def check_quotas_option(quotas: Sequence[int] | None) -> tuple[int, ...] | None:
    """``quotas`` as a tuple of ints >= 1 (or ``None``), checked once when options are built."""
    if quotas is None:
        return None
    if isinstance(quotas, int | str) or not isinstance(quotas, Sequence):
        raise ValueError(
            "`quotas` must be a sequence of ints, one per stage, first stage first "
            f"(e.g. [30, 20]). Received: quotas={quotas!r}"
        )
    return tuple(validation.check_k(f"quotas[{i}]", q, None) for i, q in enumerate(quotas))


@dataclasses.dataclass(frozen=True)
class BaselineOptions(contract.LossOptions):
    """Options every baseline has.

    Attributes:
      gt_num: size of the ground truth (the ``gt_num`` best labels; the official ``top_k``).
    """

    gt_num: int = dataclasses.field(default=10, kw_only=True)

    def validate(self) -> None:
        self._set("gt_num", validation.check_k("gt_num", self.gt_num, None))
        if "quotas" in self.field_names():
            self._set("quotas", check_quotas_option(self.quotas))

    @classmethod
    def schema_defaults(
        cls, schema: Any, quotas: Sequence[int] | None, overrides: Mapping[str, Any]
    ) -> dict[str, Any]:
        """``gt_num`` from the schema, ``quotas`` (for losses that take them) from the model."""
        out: dict[str, Any] = {}
        if schema is not None:
            out["gt_num"] = int(schema.gt_num)
        if "quotas" in cls.field_names():
            q = quotas if quotas is not None else getattr(schema, "quotas", None)
            if q is not None:
                out["quotas"] = [int(v) for v in q]
        return out


def resolve_quotas(
    quotas: Sequence[int] | None, num_stages: int, list_size: int | None, owner: str
) -> list[int]:
    """The quotas of a call: the option, or RecFlow's for 2 / 3 stages; checked against ``N``.

    Raises:
      ValueError: no default for ``num_stages``, the wrong count, or a quota > ``list_size``.
    """
    if quotas is None:
        if num_stages not in RECFLOW_QUOTAS:
            raise ValueError(
                f"{owner} needs `quotas` (one serving quota per stage, first stage first) for "
                f"{num_stages} stages; defaults exist only for 2 stages (30, 20) and 3 stages "
                "(40, 30, 20)."
            )
        quotas = RECFLOW_QUOTAS[num_stages]
    if len(quotas) != num_stages:
        raise ValueError(
            f"`quotas` must have one entry per stage ({num_stages} stages). "
            f"Received: quotas={list(quotas)!r}"
        )
    return [validation.check_k(f"quotas[{i}]", q, list_size) for i, q in enumerate(quotas)]


def prepare(
    stage_logits: Sequence[tf.Tensor],
    labels: tf.Tensor,
    mask: tf.Tensor,
    opts: BaselineOptions,
    *,
    min_stages: int = 1,
    uses_gt_num: bool = True,
) -> contract.Prepared:
    """:func:`~lcron_tf.ops.contract.prepare_inputs` (masked) plus the ``gt_num <= N`` check."""
    p = contract.prepare_inputs(
        stage_logits, labels, mask, mode="masked", check_numerics=opts.check_numerics,
        min_stages=min_stages,
    )
    if uses_gt_num:
        validation.check_k("gt_num", opts.gt_num, p.labels.shape[1])
    return p


# ---------------------------------------------------------------------------------------
# Hard ranks, ground truth, tiers
# ---------------------------------------------------------------------------------------


def hard_ranks(scores: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """1-based descending rank of every item among the valid items (no gradient).

    The one hard ranking (:func:`lcron_tf.ops.ranking.descending_ranks`): ties by lower
    index, padded items after every valid one (their ranks are ``> n_valid``).

    Args:
      scores: float ``[batch_size, list_size]``.
      mask: 0/1 ``[batch_size, list_size]``.

    Returns:
      int32 ``[batch_size, list_size]``.
    """
    return ranking.descending_ranks(tf.stop_gradient(scores), mask) + 1


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

    Items with ``ground_truth_mass > 0`` get ``max(valid labels) + 1``; the others keep their
    label. On RecFlow-shaped labels (``rank_pos`` 10..29, then 7 / 6 / 5) the distinct
    values are exactly the official stage groups. (For analysis; the losses use
    :func:`pair_relations`, which needs no sentinel value.)

    Returns:
      ``[batch_size, list_size]``, dtype of ``labels``, no gradient.
    """
    labels = tf.stop_gradient(labels)
    valid = masking.valid_mask(mask)
    floor = tf.reduce_min(labels, axis=1, keepdims=True)
    top = tf.reduce_max(tf.where(valid, labels, floor), axis=1, keepdims=True) + 1.0
    gt = ground_truth_mass(labels, mask, gt_num) > 0
    return tf.where(gt, tf.broadcast_to(top, tf.shape(labels)), labels)


def pair_relations(
    labels: tf.Tensor, mask: tf.Tensor, gt_num: int | None = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """Which valid items are in a better tier than which, and which share a tier.

    With ``gt_num``, the tiers are the ground truth (``ground_truth_mass > 0``) as one tier
    above everything, then one tier per distinct label value (the official stage groups on
    RecFlow-shaped labels); with ``gt_num=None``, one tier per distinct label. Computed from
    comparisons only, so no label magnitude can create a false tie.

    Args:
      labels: float ``[batch_size, list_size]``, higher = better.
      mask: 0/1 ``[batch_size, list_size]``.
      gt_num: ground-truth size, or ``None``.

    Returns:
      ``(better, same)``: float ``[batch_size, list_size, list_size]`` in the dtype of
      ``labels``, ``better[b, i, j] = 1`` if items ``i`` and ``j`` are valid and ``i``'s tier is
      above ``j``'s; ``same[b, i, j] = 1`` if both are valid and share a tier (``i == j``
      included). No gradient.
    """
    labels = tf.stop_gradient(labels)
    valid = masking.valid_mask(mask)
    both = valid[:, :, None] & valid[:, None, :]
    gt_i = labels[:, :, None] > labels[:, None, :]
    eq_i = labels[:, :, None] == labels[:, None, :]
    if gt_num is not None:
        gt = ground_truth_mass(labels, mask, gt_num) > 0
        a, b = gt[:, :, None], gt[:, None, :]
        better = (a & ~b) | (~a & ~b & gt_i)
        same = (a & b) | (~a & ~b & eq_i)
    else:
        better, same = gt_i, eq_i
    dtype = labels.dtype
    return tf.cast(better & both, dtype), tf.cast(same & both, dtype)


def _tier_from_relations(better: tf.Tensor, same: tf.Tensor) -> tf.Tensor:
    """``tier_i = sum_j better[j, i] / G_j``: the number of distinct tiers above item ``i``.

    The sum of fractions ``1 / G_j`` carries float rounding (``3 * (1/3)`` is not exactly 1,
    and the error depends on the list length and order), so it is rounded to the integer it
    stands for: comparisons such as ``tier < t`` must not flip on a padded slot.
    """
    sizes = tf.reduce_sum(same, axis=2)  # [B, N], >= 1 for valid items
    inv = tf.math.divide_no_nan(tf.ones_like(sizes), sizes)
    return tf.round(tf.reduce_sum(tf.transpose(better, [0, 2, 1]) * inv[:, None, :], axis=2))


def tier_index(values: tf.Tensor, mask: tf.Tensor, gt_num: int | None = None) -> tf.Tensor:
    """Dense descending rank of each item's tier among the valid items (0 = best tier).

    Args:
      values: float ``[batch_size, list_size]`` labels.
      mask: 0/1 ``[batch_size, list_size]``.
      gt_num: collapse the ground truth into the top tier (see :func:`pair_relations`).

    Returns:
      ``[batch_size, list_size]``, dtype of ``values`` (integer-valued), no gradient.
    """
    return _tier_from_relations(*pair_relations(values, mask, gt_num))


def group_pair_weights(values: tf.Tensor, mask: tf.Tensor, gt_num: int | None = None) -> tf.Tensor:
    """FS-RankNet pair weights: each tier's pairs against all lower tiers, averaged.

    ``W_ij = better_ij / (G_i * L_i)`` with ``G_i`` the size of ``i``'s tier and ``L_i`` the
    number of valid items in lower tiers. Summed against a per-pair loss this is
    ``sum_g mean_{i in g, j below g} loss_ij``: the official FS-RankNet terms (rank_pos vs the
    30 lower, rank_neg vs the 20 lower, coarse_neg vs the 10 lower), each a mean over its pairs.

    Args:
      values: float ``[batch_size, list_size]`` labels.
      mask: 0/1 ``[batch_size, list_size]``.
      gt_num: collapse the ground truth into the top tier (see :func:`pair_relations`).

    Returns:
      ``[batch_size, list_size, list_size]``, dtype of ``values``, no gradient.
    """
    better, same = pair_relations(values, mask, gt_num)
    sizes = tf.reduce_sum(same, axis=2)
    below = tf.reduce_sum(better, axis=2)
    return tf.math.divide_no_nan(better, (sizes * below)[:, :, None])


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


# ---------------------------------------------------------------------------------------
# Losses on pairs and items
# ---------------------------------------------------------------------------------------


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


def stage_parts(name: str, values: Sequence[tf.Tensor]) -> dict[str, tf.Tensor]:
    """``{"name/0": values[0], ...}``: per-stage parts of a :class:`LossTerms`."""
    return {contract.stage_part(name, s): v for s, v in enumerate(values)}


__all__ = [
    "RECFLOW_QUOTAS",
    "BaselineOptions",
    "check_quotas_option",
    "greater_pairs",
    "ground_truth_mass",
    "group_pair_weights",
    "hard_ranks",
    "masked_sigmoid_bce",
    "pair_mask",
    "pair_relations",
    "pairwise_logistic",
    "prepare",
    "resolve_quotas",
    "stage_parts",
    "tier_index",
    "tier_labels",
]
