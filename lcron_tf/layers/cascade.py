"""Cascade selection layers (Keras 2): relaxed survival (training/analysis), hard top-k (inference).

The behaviour (arguments, shapes, config) is :mod:`lcron_tf.wrappers.layers`, shared with the
Keras 3 flavour; this module adds the tf_keras ``Layer`` base and registers the classes.
"""

from __future__ import annotations

from lcron_tf._keras import keras, register_serializable
from lcron_tf.wrappers import layers as base


@register_serializable
class CascadeSelection(base.CascadeSelectionMixin, keras.layers.Layer):
    __doc__ = base.CascadeSelectionMixin.__doc__


@register_serializable
class CascadeTopK(base.CascadeTopKMixin, keras.layers.Layer):
    __doc__ = base.CascadeTopKMixin.__doc__


__all__ = ["CascadeSelection", "CascadeTopK"]
