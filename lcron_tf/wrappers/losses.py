"""The cascade-loss wrapper and the learned-sigma layer for either Keras flavour (no Keras)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import tensorflow as tf

from lcron_tf.ops import contract, inputs


def loss_key(name: str) -> str:
    """The registry key of a loss name (case-insensitive, ``-`` = ``_``)."""
    if not isinstance(name, str):
        raise ValueError(f"a loss name must be a string. Received: {name!r}")
    return name.strip().lower().replace("-", "_")


def resolve_options(
    name: str,
    spec: contract.LossSpec,
    schema: Any,
    quotas: Sequence[int] | None,
    overrides: Mapping[str, Any],
) -> dict[str, Any]:
    """The option values of a loss built by name: its dataset defaults, then ``overrides``.

    The defaults are declared by the loss's options dataclass (``schema_defaults``).

    Raises:
      ValueError: an option the loss does not accept (the message lists the accepted ones).
    """
    accepted = spec.options.field_names()
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for loss {name!r}. "
            f"Accepted: {', '.join(sorted(accepted))}"
        )
    return {**spec.options.schema_defaults(schema, quotas, overrides), **overrides}


def build_loss(
    losses: Mapping[str, type],
    name: str,
    schema: Any,
    quotas: Sequence[int] | None,
    overrides: Mapping[str, Any],
    keras_args: Sequence[str],
) -> Any:
    """Instantiate ``losses[loss_key(name)]`` with resolved options (the registries' ``get``).

    Raises:
      ValueError: an unknown name or option, or an invalid option value.
    """
    key = loss_key(name)
    if key not in losses:
        raise ValueError(f"Unknown loss {name!r}. Known losses: {list(losses)}")
    overrides = dict(overrides)
    extra = {k: overrides.pop(k) for k in keras_args if k in overrides}
    cls = losses[key]
    return cls(**resolve_options(name, cls.spec, schema, quotas, overrides), **extra)


class CascadeLossMixin:
    """Everything of a cascade loss but the Keras ``Loss`` base (see the flavours' ``CascadeLoss``).

    A loss class sets :attr:`spec` (the :class:`~lcron_tf.ops.contract.LossSpec` of its pure
    function); its options are keyword (or positional, in declaration order) arguments,
    checked once by the spec's options dataclass, kept in :attr:`options` and readable as
    attributes (``loss.tau``). ``spec = None`` keeps the extension point of a subclass that
    implements :meth:`per_request` itself (it takes no options).

    Call args (the Keras ``Loss`` convention):
      y_true: float ``[batch_size, list_size]`` labels (higher = better, < 0 = padded slot)
        or a dict ``{"labels": [B, N], "mask": [B, N]}``.
      y_pred: float ``[batch_size, num_stages, list_size]`` or a list of ``[B, N]`` tensors,
        FIRST stage first.
    """

    spec: ClassVar[contract.LossSpec | None] = None
    default_name: ClassVar[str] = "cascade_loss"
    #: Prefix of the metric names of the loss's parts (a task logs ``<prefix>_<part>``).
    metric_prefix: ClassVar[str | None] = None
    #: The flavour's weighting layer class (set by the flavour's base class).
    weighting_class: ClassVar[type | None] = None

    def _parse_options(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if self.spec is None:
            if args or kwargs:
                raise ValueError(
                    f"{type(self).__name__} takes no options (it has no `spec`). Received: "
                    f"{list(args) + sorted(kwargs)}"
                )
            return None
        return self.spec.options.from_args(args, kwargs)

    def _finish_init(self, options: Any) -> None:
        """Keep the options; create the learned weights of a weighted loss (after Loss init)."""
        self.options = options
        if self.spec is not None and self.spec.weighted:  # else there is no `weighting`
            self.weighting = self.weighting_class(
                init_sigma=options.init_sigma, trainable=options.learn_weights,
                name=f"{self.name}_weighting",
            )

    def __getattr__(self, name: str) -> Any:
        options = self.__dict__.get("options")
        if options is not None and name in options.field_names():
            return getattr(options, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def build_weighting(self, num_stages: int) -> None:
        """Create the learned ``sigma`` variables for ``num_stages`` stages (weighted losses)."""
        weighting = getattr(self, "weighting", None)
        if weighting is not None:
            weighting.ensure_built(num_stages)

    def part_names(self, num_stages: int | None) -> list[str]:
        """The keys of ``LossTerms.parts`` for ``num_stages`` stages (see ``LossSpec``)."""
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


class UncertaintyWeightingMixin:
    """Learned per-term uncertainties ``sigma_s > 0`` (stored as ``log_sigma``), any flavour.

    ``out = sum_s 0.5 / sigma_s**2 * L_s + ln(prod_s sigma_s)``
    (:func:`lcron_tf.ops.contract.uncertainty_weighted`), exactly the official LCRON
    combination of the per-stage ``L_single`` terms; stored as ``log_sigma`` so ``sigma``
    stays positive and the weight and the regulariser are never NaN (unlike the official
    unconstrained parameters). At ``sigma = 1`` the value equals the official code's.
    """

    def _set_init_sigma(self, init_sigma: float) -> None:
        if not init_sigma > 0:
            raise ValueError(f"`init_sigma` must be > 0. Received: init_sigma={init_sigma!r}")
        self.init_sigma = float(init_sigma)

    def _constant(self, value: float) -> Any:
        """The flavour's ``keras.initializers.Constant(value)``."""
        raise NotImplementedError

    def build(self, input_shape: Any) -> None:
        num_terms = tf.TensorShape(input_shape)[-1]
        if num_terms is None:
            raise ValueError("the last axis (number of loss terms) must be static")
        self.log_sigma = self.add_weight(
            name="log_sigma",
            shape=(int(num_terms),),
            initializer=self._constant(math.log(self.init_sigma)),
            trainable=True,
        )
        super().build(input_shape)

    def ensure_built(self, num_terms: int) -> Any:
        """Build for ``num_terms`` terms if needed; return ``log_sigma``.

        Raises:
          ValueError: built before for another number of terms.
        """
        if not self.built:
            self.build((None, int(num_terms)))
        elif int(self.log_sigma.shape[0]) != int(num_terms):
            raise ValueError(
                f"this loss's weighting was built for {int(self.log_sigma.shape[0])} stages; "
                f"it cannot weight {num_terms}. Use one loss object per cascade."
            )
        return self.log_sigma

    @property
    def sigma(self) -> tf.Tensor:
        """``[num_terms]`` current uncertainties ``exp(log_sigma)``."""
        return tf.exp(tf.convert_to_tensor(self.log_sigma))

    def call(self, losses: tf.Tensor) -> tf.Tensor:
        return contract.uncertainty_weighted(losses, tf.convert_to_tensor(self.log_sigma))

    def get_config(self) -> dict:
        return {**super().get_config(), "init_sigma": self.init_sigma}


__all__ = [
    "CascadeLossMixin",
    "UncertaintyWeightingMixin",
    "build_loss",
    "loss_key",
    "resolve_options",
]
