"""Thin Keras (tf_keras) layers over lcron_tf.ops."""

from lcron_tf.layers.cascade import CascadeSelection, CascadeTopK
from lcron_tf.layers.uncertainty import UncertaintyWeighting

__all__ = ["CascadeSelection", "CascadeTopK", "UncertaintyWeighting"]
