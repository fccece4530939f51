"""Thin Keras (tf_keras) layers over lcron_tf.ops."""

from lcron_tf.layers.cascade import CascadeSelection, CascadeTopK

__all__ = ["CascadeSelection", "CascadeTopK"]


def __getattr__(name: str) -> object:
    # Backwards compatibility: the learned-sigma layer belongs to the losses that own it and
    # moved to lcron_tf.losses.weighting (resolved lazily, so layers never import losses).
    if name == "UncertaintyWeighting":
        from lcron_tf.losses.weighting import UncertaintyWeighting

        return UncertaintyWeighting
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
