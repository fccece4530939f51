"""LCRON and the seven baselines as Keras (tf_keras) losses: thin classes over ``lcron_tf.ops``.

Every class is a :class:`CascadeLoss` wrapping one pure-TF loss function of
:mod:`lcron_tf.ops` (the contract of :mod:`lcron_tf.ops.contract`); build one by name with
:func:`get` (``get("arf", schema=schema)``).
"""

from lcron_tf.losses import registry
from lcron_tf.losses.arf import ArfLoss, ArfV2Loss
from lcron_tf.losses.base import CascadeLoss
from lcron_tf.losses.bce import BceLoss
from lcron_tf.losses.fs_lambdaloss import FsLambdaLoss
from lcron_tf.losses.fs_ranknet import FsRankNetLoss
from lcron_tf.losses.icc import IccLoss
from lcron_tf.losses.lcron import CascadeRecallLoss, LcronLoss, StageTopKLoss
from lcron_tf.losses.rankflow import RankFlowLoss
from lcron_tf.losses.registry import get
from lcron_tf.losses.weighting import UncertaintyWeighting
from lcron_tf.ops.lcron import lcron_loss_terms

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
    "UncertaintyWeighting",
    "get",
    "lcron_loss_terms",
    "registry",
]
