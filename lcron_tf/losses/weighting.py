"""Learned uncertainty weighting of loss terms (Kendall et al.; LCRON Eq. 13 as coded), Keras 2."""

from __future__ import annotations

from typing import Any

from lcron_tf._keras import keras, register_serializable
from lcron_tf.wrappers.losses import UncertaintyWeightingMixin


@register_serializable
class UncertaintyWeighting(UncertaintyWeightingMixin, keras.layers.Layer):
    """Holds learned per-term uncertainties ``sigma_s > 0`` and weights loss terms by them.

    ``out = sum_s 0.5 / sigma_s**2 * L_s + ln(prod_s sigma_s)``, with ``sigma`` stored as
    ``log_sigma`` (see :class:`~lcron_tf.wrappers.losses.UncertaintyWeightingMixin`). The
    cascade losses with learned weights (LCRON, ARF, ARF-v2) own one as ``loss.weighting``;
    a model must track it for the ``sigma`` to train.

    Args:
      init_sigma: initial ``sigma_s`` (> 0).
      **kwargs: ``keras.layers.Layer`` arguments (``trainable``, ``name``, ``dtype``).

    Call args:
      losses: float ``[..., num_terms]``; the last axis holds the terms.

    Returns:
      float ``[...]``: the weighted sum plus the regulariser, in the dtype of ``losses``.
    """

    def __init__(self, init_sigma: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._set_init_sigma(init_sigma)

    def _constant(self, value: float) -> Any:
        return keras.initializers.Constant(value)
