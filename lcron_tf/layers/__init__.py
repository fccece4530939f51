"""Thin Keras (tf_keras) layers over lcron_tf.ops."""

from lcron_tf.layers.uncertainty import UncertaintyWeighting

__all__ = ["UncertaintyWeighting"]
