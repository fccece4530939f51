"""LCRON losses: the functional core and thin Keras (tf_keras) classes."""

from lcron_tf.losses.base import CascadeLoss
from lcron_tf.losses.lcron import CascadeRecallLoss, LcronLoss, StageTopKLoss
from lcron_tf.ops.cascade import lcron_loss_terms

__all__ = ["CascadeLoss", "CascadeRecallLoss", "LcronLoss", "StageTopKLoss", "lcron_loss_terms"]
