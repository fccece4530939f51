"""TFRS glue: stage towers (presets ``paper`` and ``lite``), the LCRON task and the cascade."""

from lcron_tf.models.cascade_model import CascadeModel, default_metrics
from lcron_tf.models.multitask import CascadeMultiTask, positive_pairs
from lcron_tf.models.paper import FieldEmbedding, PaperDin, PaperDssm, PaperMlp, field_layout
from lcron_tf.models.presets import PRESETS
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
    "FieldEmbedding",
    "ItemTower",
    "LcronTask",
    "MlpPreRanker",
    "MultiFieldEmbedding",
    "PRESETS",
    "PaperDin",
    "PaperDssm",
    "PaperMlp",
    "UserTower",
    "default_metrics",
    "field_layout",
    "positive_pairs",
]
