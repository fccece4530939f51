"""Learned uncertainty weighting of loss terms (Kendall et al.; LCRON Eq. 13 as coded)."""

from __future__ import annotations

import math

import tensorflow as tf

from lcron_tf._keras import keras, register_serializable
from lcron_tf.ops import contract


@register_serializable
class UncertaintyWeighting(keras.layers.Layer):
    """Holds learned per-term uncertainties ``sigma_s > 0`` and weights loss terms by them.

    ``out = sum_s 0.5 / sigma_s**2 * L_s + ln(prod_s sigma_s)``
    (:func:`lcron_tf.ops.contract.uncertainty_weighted`), exactly the official LCRON
    combination of the per-stage ``L_single`` terms. ``sigma`` is stored as ``log_sigma``
    (``sigma = exp(log_sigma)``), so it stays positive and the weight and the regulariser can
    never be NaN, unlike the official unconstrained parameters. At ``sigma = 1`` the value
    equals the official code's. The cascade losses with learned weights (LCRON, ARF, ARF-v2)
    own one as ``loss.weighting``; a model must track it for the ``sigma`` to train.

    Call args:
      losses: float ``[..., num_terms]``; the last axis holds the terms.

    Returns:
      float ``[...]``: the weighted sum plus the regulariser, in the dtype of ``losses``.
    """

    def __init__(self, init_sigma: float = 1.0, **kwargs: object) -> None:
        super().__init__(**kwargs)
        if not init_sigma > 0:
            raise ValueError(f"`init_sigma` must be > 0. Received: init_sigma={init_sigma!r}")
        self.init_sigma = float(init_sigma)

    def build(self, input_shape: tf.TensorShape) -> None:
        num_terms = tf.TensorShape(input_shape)[-1]
        if num_terms is None:
            raise ValueError("the last axis (number of loss terms) must be static")
        self.log_sigma = self.add_weight(
            name="log_sigma",
            shape=[int(num_terms)],
            initializer=keras.initializers.Constant(math.log(self.init_sigma)),
            trainable=True,
        )
        super().build(input_shape)

    def ensure_built(self, num_terms: int) -> tf.Variable:
        """Build for ``num_terms`` terms if needed; return ``log_sigma``.

        Raises:
          ValueError: built before for another number of terms.
        """
        if not self.built:
            self.build(tf.TensorShape([None, int(num_terms)]))
        elif int(self.log_sigma.shape[0]) != int(num_terms):
            raise ValueError(
                f"this loss's weighting was built for {int(self.log_sigma.shape[0])} stages; "
                f"it cannot weight {num_terms}. Use one loss object per cascade."
            )
        return self.log_sigma

    @property
    def sigma(self) -> tf.Tensor:
        """``[num_terms]`` current uncertainties ``exp(log_sigma)``."""
        return tf.exp(self.log_sigma)

    def call(self, losses: tf.Tensor) -> tf.Tensor:
        return contract.uncertainty_weighted(losses, self.log_sigma)

    def get_config(self) -> dict:
        return {**super().get_config(), "init_sigma": self.init_sigma}
