"""Keras classes of LCRON: the full loss, L_e2e alone, and L_single alone."""

from __future__ import annotations

from lcron_tf._keras import register_serializable
from lcron_tf.losses.base import CascadeLoss
from lcron_tf.ops import lcron


@register_serializable
class LcronLoss(CascadeLoss):
    """LCRON: ``L_e2e + sum_s 0.5 / sigma_s**2 * L_single_s + ln(prod_s sigma_s)``.

    The math is :func:`lcron_tf.ops.lcron.lcron_loss`. ``sigma_s`` are learned (one per
    stage) in ``self.weighting``; they train with the model's optimizer when the model
    tracks that layer: ``LcronTask`` and ``CascadeModel`` do; with a plain
    ``model.compile(loss=LcronLoss())`` assign ``model.loss_weighting = loss.weighting`` (or
    pass ``learn_weights=False`` to keep every ``sigma = 1``).

    Args (:class:`lcron_tf.ops.lcron.LcronOptions`, positional in this order):
      gt_num: size of the ground-truth set (top ``gt_num`` labels).
      stage_k: int or one int per stage, the ``k`` of each stage's relaxed top-k (the
        paper uses 10 = gt_num, not the serving quotas).
      tau: relaxed-sort temperature (paper: 50).
      sort: ``"neural"`` or ``"soft"``.
      mode: ``"masked"`` (default: padded candidates fully excluded) or ``"reference"``
        (bit-faithful to the official code, prefix mask and all).
      label_matrix: ``None`` (mode's default), ``"soft"`` or ``"binary"``.
      impl: ``"auto"`` (the faster exact path for the list size, as measured by
        ``benchmarks/bench_loss.py``), ``"dense"`` or ``"lean"``.
      learn_weights: learn the ``sigma_s``; ``False`` fixes them at ``init_sigma``.
      init_sigma: initial ``sigma_s`` (official: 1.0).
      eps, check_numerics: see the options dataclass.
      reduction, name: of ``keras.losses.Loss``.

    Call args: see :class:`CascadeLoss`. Returns per-request losses ``[batch_size]``
    before the Keras reduction (the ``ln sigma`` regulariser is added to every request, so
    its batch mean is the official total). Parts: ``e2e``, ``single/<s>``, ``sigma/<s>``.
    """

    spec = lcron.LCRON
    default_name = "lcron_loss"
    metric_prefix = "lcron"


@register_serializable
class CascadeRecallLoss(CascadeLoss):
    """``L_e2e`` alone: BCE on the relaxed end-to-end survival lower bound.

    :func:`lcron_tf.ops.lcron.cascade_recall_loss`; the arguments of :class:`LcronLoss`
    without the weighting. Returns ``[batch_size]``.
    """

    spec = lcron.CASCADE_RECALL
    default_name = "cascade_recall_loss"
    metric_prefix = "lcron"


@register_serializable
class StageTopKLoss(CascadeLoss):
    """``sum_s L_single_s``: each stage's own relaxed top-k BCE, unweighted.

    :func:`lcron_tf.ops.lcron.stage_topk_loss`; with a single stage this is LCRON's
    ``L_single`` (and, with ``stage_k = m``, ARF-v2's ``L_relax``). The arguments of
    :class:`LcronLoss` without the weighting. Returns ``[batch_size]``.
    """

    spec = lcron.STAGE_TOPK
    default_name = "stage_topk_loss"
    metric_prefix = "lcron"


__all__ = ["CascadeRecallLoss", "LcronLoss", "StageTopKLoss"]
