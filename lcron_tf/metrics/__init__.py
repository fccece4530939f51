"""Keras (tf_keras) cascade-ranking metrics with the official LCRON definitions."""

from lcron_tf.metrics.ranking import NDCG, CascadeRankingMetric, JointRecall, StageRecall

__all__ = ["NDCG", "CascadeRankingMetric", "JointRecall", "StageRecall"]
