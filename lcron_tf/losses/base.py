"""Base class of every cascade loss: input parsing, per-request losses, config, registration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import tensorflow as tf

from lcron_tf._keras import keras
from lcron_tf.layers.uncertainty import UncertaintyWeighting
from lcron_tf.ops import inputs, validation


class CascadeLoss(keras.losses.Loss):
    """A loss over the scores of every stage of a cascade.

    The contract shared by LCRON and all baselines: per-stage scores + labels + mask in,
    one loss per request out (Keras then applies ``sample_weight`` and the reduction).

    Call args (Keras ``Loss`` convention):
      y_true: float ``[batch_size, list_size]`` labels (higher = better, < 0 = padded slot)
        or a dict ``{"labels": [B, N], "mask": [B, N]}``.
      y_pred: float ``[batch_size, num_stages, list_size]`` or a list of ``[B, N]``
        tensors, FIRST stage first.
      sample_weight: optional ``[batch_size]`` per-request weights.

    Subclasses implement :meth:`per_request`. Models that reduce losses themselves
    (``LcronTask``, ``CascadeModel``, for ``tf.distribute``) call ``per_request`` directly.
    """

    def per_request(
        self, stage_logits: Sequence[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> tf.Tensor:
        """Loss of each request.

        Args:
          stage_logits: list of float ``[batch_size, list_size]``, first stage first.
          labels: float ``[batch_size, list_size]``, higher = better.
          mask: float 0/1 ``[batch_size, list_size]``.

        Returns:
          float ``[batch_size]``.
        """
        raise NotImplementedError

    def call(
        self, y_true: tf.Tensor | Mapping[str, tf.Tensor], y_pred: tf.Tensor | Sequence[tf.Tensor]
    ) -> tf.Tensor:
        labels, mask = inputs.split_labels_mask(y_true)
        return self.per_request(inputs.split_stages(y_pred), labels, mask)


class UncertaintyWeightedMixin:
    """For losses that weight per-stage terms by learned uncertainties (LCRON, ARF, ARF-v2).

    Holds the :class:`UncertaintyWeighting` layer as ``self.weighting`` (a model must track it
    for the sigmas to train: ``LcronTask`` and ``CascadeModel`` do) and its two options.
    """

    def _init_weighting(self, learn_weights: bool, init_sigma: float, name: str) -> None:
        self.learn_weights = bool(learn_weights)
        self.init_sigma = validation.check_positive("init_sigma", init_sigma)
        self.weighting = UncertaintyWeighting(
            init_sigma=self.init_sigma, trainable=self.learn_weights, name=f"{name}_weighting"
        )

    def _weighted(self, stacked: tf.Tensor) -> tf.Tensor:
        """``[batch_size, num_stages]`` terms -> ``[batch_size]`` weighted sum + regulariser."""
        if stacked.dtype != self.weighting.dtype and not self.weighting.built:
            # First call in another float dtype (e.g. float64 checks): build in that dtype.
            self.weighting = UncertaintyWeighting(
                init_sigma=self.init_sigma, trainable=self.learn_weights,
                name=self.weighting.name, dtype=stacked.dtype,
            )
        return tf.cast(self.weighting(stacked), stacked.dtype)

    def _weighting_config(self) -> dict:
        return {"learn_weights": self.learn_weights, "init_sigma": self.init_sigma}
