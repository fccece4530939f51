"""Keras 2 (tf_keras) metrics with the official LCRON definitions (lcron_method.md §1).

The definitions, inputs and options are those of :mod:`lcron_tf.wrappers.metrics` (shared
with the Keras 3 flavour); this module adds the tf_keras ``Mean`` base and registers them.
"""

from __future__ import annotations

from lcron_tf._keras import keras, register_serializable
from lcron_tf.wrappers import metrics as base


class CascadeRankingMetric(base.CascadeMetricMixin, keras.metrics.Mean):
    """Base: a weighted mean over requests of ``per_request(stage_scores, labels, mask)``."""


@register_serializable
class JointRecall(base.JointRecallMixin, CascadeRankingMetric):
    __doc__ = base.JointRecallMixin.__doc__


@register_serializable
class StageRecall(base.StageRecallMixin, CascadeRankingMetric):
    __doc__ = base.StageRecallMixin.__doc__


@register_serializable
class NDCG(base.NdcgMixin, CascadeRankingMetric):
    __doc__ = base.NdcgMixin.__doc__


__all__ = ["NDCG", "CascadeRankingMetric", "JointRecall", "StageRecall"]
