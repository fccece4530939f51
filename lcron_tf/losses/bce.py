"""Keras class of the BCE baseline."""

from lcron_tf._keras import register_serializable
from lcron_tf.losses.base import CascadeLoss
from lcron_tf.ops.baselines import bce


@register_serializable
class BceLoss(CascadeLoss):
    """Independent pointwise BCE of every stage against the ground-truth indicator.

    :func:`lcron_tf.ops.baselines.bce.bce_loss`; options :class:`~lcron_tf.ops.baselines.bce.
    BceOptions` (``gt_num``, ``train_tiers``, ``normalize``). Returns ``[batch_size]``.
    """

    spec = bce.BCE
    default_name = "bce_loss"
