"""Keras class of the ICC baseline."""

from lcron_tf._keras import register_serializable
from lcron_tf.losses.base import CascadeLoss
from lcron_tf.ops.baselines import icc


@register_serializable
class IccLoss(CascadeLoss):
    """ICC (Gallagher et al. 2019): RankNet on the indicator-fused cascade score.

    :func:`lcron_tf.ops.baselines.icc.icc_loss`; options
    :class:`~lcron_tf.ops.baselines.icc.IccOptions` (``quotas``, ``sigma``, ``kappa``,
    ``pairs``, ``scales``). Needs at least 2 stages. Returns ``[batch_size]``.
    """

    spec = icc.ICC
    default_name = "icc_loss"
