"""Keras 3 cascade-ranking metrics with the official LCRON definitions.

:mod:`lcron_tf.wrappers.metrics` on ``keras.metrics.Mean`` (definitions, inputs and options
as the Keras 2 metrics of the same name). Pass ``name=`` to tell several apart in History.
"""

from __future__ import annotations

import keras

from lcron_tf.wrappers import metrics as base

register = keras.saving.register_keras_serializable(package="lcron_tf")


class CascadeRankingMetric(base.CascadeMetricMixin, keras.metrics.Mean):
    """Base: a weighted mean over requests of ``per_request(stage_scores, labels, mask)``."""


@register
class JointRecall(base.JointRecallMixin, CascadeRankingMetric):
    __doc__ = base.JointRecallMixin.__doc__


@register
class StageRecall(base.StageRecallMixin, CascadeRankingMetric):
    __doc__ = base.StageRecallMixin.__doc__


@register
class NDCG(base.NdcgMixin, CascadeRankingMetric):
    __doc__ = base.NdcgMixin.__doc__


__all__ = ["NDCG", "CascadeRankingMetric", "JointRecall", "StageRecall"]
