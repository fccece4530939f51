"""Keras class of the FS-LambdaLoss baseline."""

from lcron_tf._keras import register_serializable
from lcron_tf.losses.base import CascadeLoss
from lcron_tf.ops.baselines import fs_lambdaloss


@register_serializable
class FsLambdaLoss(CascadeLoss):
    """Full-stage LambdaLoss (TF-Ranking's LambdaLoss, NDCG weights), every stage.

    :func:`lcron_tf.ops.baselines.fs_lambdaloss.fs_lambdaloss_loss`; options
    :class:`~lcron_tf.ops.baselines.fs_lambdaloss.FsLambdaOptions` (``quotas``, ``topn``,
    ``smooth_fraction``). Returns ``[batch_size]``.
    """

    spec = fs_lambdaloss.FS_LAMBDALOSS
    default_name = "fs_lambdaloss"
