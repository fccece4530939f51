"""Keras classes of the ARF and ARF-v2 baselines."""

from lcron_tf._keras import register_serializable
from lcron_tf.losses.base import CascadeLoss
from lcron_tf.ops.baselines import arf


@register_serializable
class ArfLoss(CascadeLoss):
    """ARF (Wang et al. 2024, Adaptive Neural Ranking Framework), per stage, summed.

    :func:`lcron_tf.ops.baselines.arf.arf_loss`; options
    :class:`~lcron_tf.ops.baselines.arf.ArfOptions` (``quotas``, ``gt_num``, ``tau`` = 200,
    ``learn_weights``, ``init_sigma``). The learned ``sigma_s`` of ``L_global`` live in
    ``self.weighting``, tracked like LCRON's. Returns ``[batch_size]``.
    """

    spec = arf.ARF
    default_name = "arf_loss"


@register_serializable
class ArfV2Loss(CascadeLoss):
    """ARF-v2: ARF with ``L_relax`` replaced by LCRON's ``L_single`` at ``m`` rows.

    :func:`lcron_tf.ops.baselines.arf.arf_v2_loss`; the options of :class:`ArfLoss`.
    """

    spec = arf.ARF_V2
    default_name = "arf_v2_loss"
