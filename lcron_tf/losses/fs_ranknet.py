"""Keras class of the FS-RankNet baseline."""

from lcron_tf._keras import register_serializable
from lcron_tf.losses.base import CascadeLoss
from lcron_tf.ops.baselines import fs_ranknet


@register_serializable
class FsRankNetLoss(CascadeLoss):
    """Full-stage RankNet (FS-LTR, Zheng et al. 2024) over label tiers, every stage.

    :func:`lcron_tf.ops.baselines.fs_ranknet.fs_ranknet_loss`; options
    :class:`~lcron_tf.ops.baselines.fs_ranknet.FsRankNetOptions` (``gt_num``, ``groups``).
    Returns ``[batch_size]``.
    """

    spec = fs_ranknet.FS_RANKNET
    default_name = "fs_ranknet_loss"
