"""The one Keras (tf_keras) wrapper of every cascade loss.

A registered loss class is a few lines: it names the :class:`~lcron_tf.ops.contract.LossSpec`
of its pure-TF loss function (which declares the options dataclass, the part names and
whether the loss has learned per-stage weights). This class does everything else: the
constructor (options validated once, by the dataclass), the Keras ``call`` convention,
``get_config``/``from_config``, and the learned ``sigma`` variables of weighted losses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import tensorflow as tf

from lcron_tf._keras import keras
from lcron_tf.losses.weighting import UncertaintyWeighting
from lcron_tf.ops import contract, inputs


class CascadeLoss(keras.losses.Loss):
    """A loss over the scores of every stage of a cascade (the cascade-loss contract).

    Per-stage scores + labels + mask in, one loss per request out; Keras then applies
    ``sample_weight`` and the reduction. Subclasses set :attr:`spec` (and a
    :attr:`default_name`); options are keyword (or positional, in declaration order)
    arguments, checked by the spec's options dataclass, stored in :attr:`options` and also
    readable as attributes (``loss.tau``).

    Call args (Keras ``Loss`` convention):
      y_true: float ``[batch_size, list_size]`` labels (higher = better, < 0 = padded slot)
        or a dict ``{"labels": [B, N], "mask": [B, N]}``.
      y_pred: float ``[batch_size, num_stages, list_size]`` or a list of ``[B, N]``
        tensors, FIRST stage first.
      sample_weight: optional ``[batch_size]`` per-request weights.

    Models that reduce losses themselves (``LcronTask``, ``CascadeModel``, for
    ``tf.distribute``) call :meth:`terms` or :meth:`per_request` directly.

    Losses with learned per-stage weights hold them in an :class:`UncertaintyWeighting`
    layer, ``self.weighting`` (built on the first call, or by :meth:`build_weighting`); a
    model must track it for the ``sigma`` to train: ``LcronTask`` and ``CascadeModel`` do,
    with a plain ``model.compile(loss=...)`` assign ``model.loss_weighting = loss.weighting``.
    """

    #: The pure loss this class wraps. ``None`` keeps the original extension point: a
    #: subclass without a spec implements :meth:`per_request` itself (and has no options).
    spec: ClassVar[contract.LossSpec | None] = None
    default_name: ClassVar[str] = "cascade_loss"
    #: Prefix of the metric names of the loss's parts (``LcronTask`` logs ``<prefix>_<part>``).
    metric_prefix: ClassVar[str | None] = None

    def __init__(
        self,
        *args: Any,
        reduction: str = keras.losses.Reduction.AUTO,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if self.spec is None:
            if args or kwargs:
                raise ValueError(
                    f"{type(self).__name__} takes no options (it has no `spec`). Received: "
                    f"{list(args) + sorted(kwargs)}"
                )
            options = None
        else:
            options = self.spec.options.from_args(args, kwargs)
        super().__init__(reduction=reduction, name=name or self.default_name)
        self.options = options
        if self.spec is not None and self.spec.weighted:  # else there is no `weighting`
            self.weighting = UncertaintyWeighting(
                init_sigma=options.init_sigma, trainable=options.learn_weights,
                name=f"{self.name}_weighting",
            )

    def __getattr__(self, name: str) -> Any:
        options = self.__dict__.get("options")
        if options is not None and name in options.field_names():
            return getattr(options, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------------ the contract

    def build_weighting(self, num_stages: int) -> None:
        """Create the learned ``sigma`` variables for ``num_stages`` stages (weighted losses)."""
        weighting = getattr(self, "weighting", None)
        if weighting is not None:
            weighting.ensure_built(num_stages)

    def part_names(self, num_stages: int | None) -> list[str]:
        """The keys of :attr:`LossTerms.parts` for ``num_stages`` stages (see ``LossSpec``)."""
        return [] if self.spec is None else self.spec.part_names(num_stages)

    def terms(
        self, stage_logits: Sequence[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> contract.LossTerms:
        """The loss of each request and its named parts.

        Args:
          stage_logits: list of float ``[batch_size, list_size]``, first stage first.
          labels: float ``[batch_size, list_size]``, higher = better.
          mask: 0/1 ``[batch_size, list_size]``.

        Returns:
          :class:`~lcron_tf.ops.contract.LossTerms`: ``per_request`` float ``[batch_size]``
          and ``parts`` ``{name: [batch_size]}``.
        """
        if self.spec is None:
            return contract.LossTerms(self.per_request(stage_logits, labels, mask), {})
        kwargs: dict[str, Any] = {}
        weighting = getattr(self, "weighting", None)
        if weighting is not None:
            if isinstance(stage_logits, Sequence) and not isinstance(stage_logits, tf.Tensor):
                kwargs["log_sigma"] = weighting.ensure_built(len(stage_logits))
        return self.spec.fn(stage_logits, labels, mask, options=self.options, **kwargs)

    def per_request(
        self, stage_logits: Sequence[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> tf.Tensor:
        """Loss of each request, float ``[batch_size]`` (arguments as :meth:`terms`)."""
        if self.spec is None:
            raise NotImplementedError(
                f"{type(self).__name__} must set `spec` or implement `per_request`"
            )
        return self.terms(stage_logits, labels, mask).per_request

    def call(
        self, y_true: tf.Tensor | Mapping[str, tf.Tensor], y_pred: tf.Tensor | Sequence[tf.Tensor]
    ) -> tf.Tensor:
        labels, mask = inputs.split_labels_mask(y_true)
        return self.per_request(inputs.split_stages(y_pred), labels, mask)

    def get_config(self) -> dict:
        options = {} if self.options is None else self.options.to_config()
        return {**super().get_config(), **options}


__all__ = ["CascadeLoss"]
