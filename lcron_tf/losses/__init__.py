"""LCRON and baseline cascade losses: the functional core and thin Keras (tf_keras) classes."""

from lcron_tf.losses import registry
from lcron_tf.losses.base import CascadeLoss
from lcron_tf.losses.baselines import (
    ArfLoss,
    ArfV2Loss,
    BceLoss,
    FsLambdaLoss,
    FsRankNetLoss,
    IccLoss,
    RankFlowLoss,
)
from lcron_tf.losses.lcron import CascadeRecallLoss, LcronLoss, StageTopKLoss
from lcron_tf.losses.registry import get
from lcron_tf.ops.cascade import lcron_loss_terms

__all__ = [
    "ArfLoss",
    "ArfV2Loss",
    "BceLoss",
    "CascadeLoss",
    "CascadeRecallLoss",
    "FsLambdaLoss",
    "FsRankNetLoss",
    "IccLoss",
    "LcronLoss",
    "RankFlowLoss",
    "StageTopKLoss",
    "get",
    "lcron_loss_terms",
    "registry",
]
