"""The seven baselines of the LCRON paper as Keras losses (one module each; kept as one name).

:class:`BceLoss`, :class:`IccLoss`, :class:`RankFlowLoss`, :class:`FsRankNetLoss`,
:class:`FsLambdaLoss`, :class:`ArfLoss`, :class:`ArfV2Loss`: thin wrappers over the pure-TF
functions of :mod:`lcron_tf.ops.baselines` (conventions and the official-form options are
documented there).
"""

from lcron_tf.losses.arf import ArfLoss, ArfV2Loss
from lcron_tf.losses.bce import BceLoss
from lcron_tf.losses.fs_lambdaloss import FsLambdaLoss
from lcron_tf.losses.fs_ranknet import FsRankNetLoss
from lcron_tf.losses.icc import IccLoss
from lcron_tf.losses.rankflow import RankFlowLoss
from lcron_tf.ops.baselines import RECFLOW_QUOTAS

__all__ = [
    "RECFLOW_QUOTAS",
    "ArfLoss",
    "ArfV2Loss",
    "BceLoss",
    "FsLambdaLoss",
    "FsRankNetLoss",
    "IccLoss",
    "RankFlowLoss",
]
