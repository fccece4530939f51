"""TFRS glue: stage towers, the LCRON task and the end-to-end cascade model."""

from lcron_tf.models.cascade_model import CascadeModel, default_metrics
from lcron_tf.models.multitask import CascadeMultiTask, positive_pairs
from lcron_tf.models.task import LcronTask
from lcron_tf.models.towers import (
    DinRanker,
    DssmRetrieval,
    ItemTower,
    MlpPreRanker,
    MultiFieldEmbedding,
    UserTower,
)

__all__ = [
    "CascadeModel",
    "CascadeMultiTask",
    "DinRanker",
    "DssmRetrieval",
    "ItemTower",
    "LcronTask",
    "MlpPreRanker",
    "MultiFieldEmbedding",
    "UserTower",
    "default_metrics",
    "positive_pairs",
]
