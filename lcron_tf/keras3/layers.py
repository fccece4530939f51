"""Keras 3 cascade selection layers: relaxed survival and the hard inference cascade.

:mod:`lcron_tf.wrappers.layers` on ``keras.layers.Layer`` (arguments, shapes and config as
the Keras 2 layers of the same name).
"""

from __future__ import annotations

import keras

from lcron_tf.wrappers import layers as base

register = keras.saving.register_keras_serializable(package="lcron_tf")


@register
class CascadeSelection(base.CascadeSelectionMixin, keras.layers.Layer):
    __doc__ = base.CascadeSelectionMixin.__doc__


@register
class CascadeTopK(base.CascadeTopKMixin, keras.layers.Layer):
    __doc__ = base.CascadeTopKMixin.__doc__


__all__ = ["CascadeSelection", "CascadeTopK"]
