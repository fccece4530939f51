"""Keras class of the RankFlow baseline."""

from lcron_tf._keras import register_serializable
from lcron_tf.losses.base import CascadeLoss
from lcron_tf.ops.baselines import rankflow


@register_serializable
class RankFlowLoss(CascadeLoss):
    """RankFlow (Qin et al. 2022) as coded: joint training along the hard cascade.

    :func:`lcron_tf.ops.baselines.rankflow.rankflow_loss`; options
    :class:`~lcron_tf.ops.baselines.rankflow.RankFlowOptions` (``quotas``, ``gt_num``,
    ``distill_weight``, ``rank_weight``). Needs at least 2 stages. Returns ``[batch_size]``.
    """

    spec = rankflow.RANKFLOW
    default_name = "rankflow_loss"
