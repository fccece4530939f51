"""The one contract of every cascade loss (pure TF, no Keras).

Every cascade loss of lcron_tf (LCRON, its two partial forms and the seven baselines of the
paper) is a pure function

    ``loss_fn(stage_logits, labels, mask, *, options=None, **option_overrides) -> LossTerms``

* ``stage_logits``: a list of ``num_stages`` float ``[batch_size, list_size]`` tensors, FIRST
  stage first (retrieval ... final ranking);
* ``labels``: float ``[batch_size, list_size]``, higher = better;
* ``mask``: 0/1 (or bool) ``[batch_size, list_size]``, 1 = real candidate;
* ``options``: the loss's frozen options dataclass (a :class:`LossOptions` subclass that
  declares and validates every option once); keyword overrides build or update it;
* losses with learned stage weights (LCRON, ARF, ARF-v2) also take ``log_sigma``, float
  ``[num_stages]`` (``None`` = every ``sigma = 1``).

The result, :class:`LossTerms`, holds ``per_request`` (float ``[batch_size]``, the loss of
every request, before any reduction) and ``parts``, a dict of named float ``[batch_size]``
parts (``"e2e"``, per-stage parts named ``"single/0"``, ``"single/1"``, ... with the stage
index after ``/``), so a task can log any loss's parts without knowing the loss.

The numeric contract, shared by every loss through :func:`prepare_inputs`:

* dtypes: float16 and bfloat16 (and integer) inputs are computed in float32, float64 stays
  float64; the result is in that compute dtype;
* ``mode="masked"`` (the default everywhere, :data:`~lcron_tf.ops.validation.DEFAULT_MODE`):
  padded slots are replaced with ``tf.where`` before any arithmetic, so the value and the
  gradients do not depend on anything in them (``±inf`` and NaN scores, NaN/inf labels
  included) and equal those of the same request with the padded slots removed;
  ``mode="reference"`` (LCRON only) is the official code, which sorts padded slots: there
  every slot must be finite, as in the official code;
* non-finite values in *valid* slots propagate (the loss is NaN and visibly so, as in optax);
  ``check_numerics=True`` instead raises ``InvalidArgumentError`` naming the input (a runtime
  check: outside XLA only, where TensorFlow keeps it);
* a batch of 0 requests gives ``per_request`` of shape ``[0]`` and batch means of 0 with zero
  gradients;
* bad arguments (a ragged input, wrong ranks or shapes, a ``k`` of the wrong type or
  outside ``[1, list_size]``, a ``tau`` that overflows float32, mask values outside {0, 1})
  raise ``ValueError`` naming the argument, when the function is traced;
* a ``k`` (or quota) larger than a list size known only when the step runs is no error:
  the result is that of the same requests padded to a list size ``>= k``; they have
  ``n <= k`` valid candidates, so every term gated by ``n > k`` is 0 (LCRON's terms: weight
  0, loss 0, zero gradients, as every request with ``n <= k``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import tensorflow as tf

from lcron_tf.ops import masking, validation


class LossTerms(NamedTuple):
    """The result of every cascade loss function.

    Attributes:
      per_request: float ``[batch_size]``, the loss of each request (unreduced).
      parts: dict ``{name: float [batch_size]}`` of named parts for logging; per-stage
        parts are named ``"<part>/<stage index>"`` (see :func:`stage_part`).
    """

    per_request: tf.Tensor
    parts: dict[str, tf.Tensor]


def stage_part(name: str, stage: int) -> str:
    """The key of stage ``stage``'s part ``name`` in :attr:`LossTerms.parts`: ``"name/stage"``."""
    return f"{name}/{int(stage)}"


def split_part(key: str) -> tuple[str, int | None]:
    """``"single/1"`` -> ``("single", 1)``; ``"e2e"`` -> ``("e2e", None)``."""
    name, sep, stage = key.rpartition("/")
    if sep and stage.isdigit():
        return name, int(stage)
    return key, None


# ----------------------------------------------------------------------------- options


@dataclasses.dataclass(frozen=True)
class LossOptions:
    """Base of every loss's options: a frozen dataclass validated once, when it is built.

    Subclasses declare their options as fields (with defaults) and check them in
    :meth:`validate`; :meth:`to_config` / :meth:`from_args` give the Keras config round trip.

    Attributes:
      check_numerics: raise ``InvalidArgumentError`` when a valid slot holds a non-finite
        score or label (outside XLA); by default they propagate.
    """

    check_numerics: bool = dataclasses.field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        if not isinstance(self.check_numerics, bool):
            raise ValueError(
                f"`check_numerics` must be a bool. Received: check_numerics={self.check_numerics!r}"
            )
        self.validate()

    def validate(self) -> None:
        """Check (and normalise with :meth:`_set`) the fields; raise ``ValueError``."""

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Every option name, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def positional_names(cls) -> tuple[str, ...]:
        """The options that may also be passed positionally, in order."""
        return tuple(f.name for f in dataclasses.fields(cls) if not f.kw_only)

    @classmethod
    def from_args(cls, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> Any:
        """Build from positional and keyword arguments.

        Raises:
          ValueError: too many positional arguments, an option given twice, or an unknown
            option (the message lists the accepted ones).
        """
        kwargs = dict(kwargs or {})
        names = cls.positional_names()
        if len(args) > len(names):
            raise ValueError(
                f"{cls.__name__} takes at most {len(names)} positional options "
                f"({', '.join(names)}). Received: {len(args)}"
            )
        for name, value in zip(names, args):
            if name in kwargs:
                raise ValueError(f"option `{name}` given twice (positionally and by keyword)")
            kwargs[name] = value
        unknown = sorted(set(kwargs) - set(cls.field_names()))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for {cls.__name__}. Accepted: "
                f"{', '.join(cls.field_names())}"
            )
        return cls(**kwargs)

    def to_config(self) -> dict[str, Any]:
        """JSON-friendly dict of every option (tuples become lists)."""

        def plain(v: Any) -> Any:
            return [plain(x) for x in v] if isinstance(v, tuple | list) else v

        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> Any:
        """A copy with some options changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def schema_defaults(
        cls, schema: Any, quotas: Sequence[int] | None, overrides: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Defaults that follow from a dataset (e.g. ``gt_num``, the serving quotas).

        Args:
          schema: a :class:`lcron_tf.schema.CascadeSchema` (or ``None``).
          quotas: the model's serving quotas, first stage first (``None`` = the schema's).
          overrides: the options the caller sets explicitly (defaults may follow them).

        Returns:
          A dict of option values (only options of this class).
        """
        return {}


@dataclasses.dataclass(frozen=True, kw_only=True)
class WeightingOptions:
    """The two options of losses with learned per-stage weights (``sigma_s``).

    Attributes:
      learn_weights: learn the ``sigma_s``; ``False`` fixes them at ``init_sigma``.
      init_sigma: initial ``sigma_s`` (> 0; official: 1.0).
    """

    learn_weights: bool = True
    init_sigma: float = 1.0

    def _validate_weighting(self) -> None:
        if not isinstance(self.learn_weights, bool):
            raise ValueError(
                f"`learn_weights` must be a bool. Received: learn_weights={self.learn_weights!r}"
            )
        object.__setattr__(
            self, "init_sigma", validation.check_positive("init_sigma", self.init_sigma)
        )


def resolve_options(
    cls: type[LossOptions], options: LossOptions | None, overrides: Mapping[str, Any]
) -> Any:
    """``options`` updated by ``overrides`` (or ``cls(**overrides)`` when ``options`` is None).

    Raises:
      ValueError: ``options`` of another class, or an unknown override.
    """
    if options is None:
        return cls.from_args((), overrides)
    if not isinstance(options, cls):
        raise ValueError(
            f"`options` must be a {cls.__name__}. Received: {type(options).__name__}"
        )
    if overrides:
        unknown = sorted(set(overrides) - set(cls.field_names()))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for {cls.__name__}. Accepted: "
                f"{', '.join(cls.field_names())}"
            )
        return options.replace(**overrides)
    return options


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """What the Keras wrapper and the registry need to know about one loss.

    Attributes:
      key: registry name and metric prefix (``"lcron"``, ``"bce"``, ...).
      fn: the pure loss function (see the module docstring).
      options: its :class:`LossOptions` subclass.
      parts: the part names it returns; ``"name/*"`` stands for one part per stage.
      weighted: whether ``fn`` takes ``log_sigma`` (learned per-stage weights).
      min_stages: the fewest stages the method makes sense for.
    """

    key: str
    fn: Callable[..., LossTerms]
    options: type[LossOptions]
    parts: tuple[str, ...]
    weighted: bool = False
    min_stages: int = 1

    def part_names(self, num_stages: int | None) -> list[str]:
        """The concrete part keys for ``num_stages`` stages (per-stage ones need it)."""
        out: list[str] = []
        for p in self.parts:
            if p.endswith("/*"):
                if num_stages is not None:
                    out.extend(stage_part(p[:-2], s) for s in range(num_stages))
            else:
                out.append(p)
        return out


# ----------------------------------------------------------------------------- inputs


class Prepared(NamedTuple):
    """Checked, converted inputs of a loss (see :func:`prepare_inputs`).

    Attributes:
      logits: list of ``[batch_size, list_size]`` in the compute dtype.
      labels: ``[batch_size, list_size]`` in the compute dtype.
      mask: 0/1 ``[batch_size, list_size]`` in the compute dtype.
      valid: bool ``[batch_size, list_size]``.
      dtype: the compute dtype (float32, or float64 for float64 input).
    """

    logits: list[tf.Tensor]
    labels: tf.Tensor
    mask: tf.Tensor
    valid: tf.Tensor
    dtype: tf.DType


def compute_dtype(x: tf.Tensor) -> tf.DType:
    """float64 for float64 ``x``, else float32 (float16 / bfloat16 / ints compute in float32)."""
    return tf.float64 if x.dtype == tf.float64 else tf.float32


def _tensor(name: str, x: Any) -> tf.Tensor:
    if isinstance(x, tf.RaggedTensor | tf.SparseTensor):
        raise ValueError(
            f"`{name}` must be a dense [batch_size, list_size] tensor; ragged and sparse "
            "tensors are not supported (they do not compile with XLA). Pad every list to one "
            "list_size and pass a 0/1 mask, e.g. `x.to_tensor()` and "
            f"`tf.ones_like(x).to_tensor()`. Received: {type(x).__name__}"
        )
    return tf.convert_to_tensor(x)


def prepare_inputs(
    stage_logits: Sequence[tf.Tensor],
    labels: tf.Tensor,
    mask: tf.Tensor,
    *,
    mode: str = validation.DEFAULT_MODE,
    check_numerics: bool = False,
    min_stages: int = 1,
) -> Prepared:
    """Check and convert a loss's inputs; the one place padded slots are excluded.

    Args:
      stage_logits: list of float ``[batch_size, list_size]``, first stage first.
      labels: ``[batch_size, list_size]``.
      mask: 0/1 or bool ``[batch_size, list_size]``.
      mode: ``"masked"`` replaces every padded score and label by 0 with ``tf.where``;
        ``"reference"`` leaves them (the official code sorts them).
      check_numerics: add runtime checks that valid slots are finite.
      min_stages: the fewest stages accepted.

    Returns:
      A :class:`Prepared`.

    Raises:
      ValueError: not a list of stages, fewer than ``min_stages``, a ragged/sparse input,
        wrong rank or shape, mask values outside {0, 1} known at trace time, unknown mode.
    """
    validation.check_choice("mode", mode, validation.MODE_CHOICES)
    if isinstance(stage_logits, tf.Tensor | tf.RaggedTensor) or not isinstance(
        stage_logits, Sequence
    ):
        raise ValueError(
            "`stage_logits` must be a list of [batch_size, list_size] tensors, first stage "
            f"first. Received: {type(stage_logits).__name__}"
        )
    need = max(1, min_stages)
    if len(stage_logits) < need:
        what = "one stage" if need == 1 else f"{need} stages"
        raise ValueError(
            f"`stage_logits` must contain at least {what}. Received: {len(stage_logits)} stage(s)"
        )
    logits = [_tensor(f"stage_logits[{i}]", x) for i, x in enumerate(stage_logits)]
    labels = _tensor("labels", labels)
    mask = _tensor("mask", mask)
    dtype = compute_dtype(logits[0])
    validation.check_rank2("labels", labels)
    validation.check_rank2("mask", mask)
    validation.check_same_shape("labels", labels, "mask", mask)
    for i, x in enumerate(logits):
        validation.check_rank2(f"stage_logits[{i}]", x)
        validation.check_same_shape(f"stage_logits[{i}]", x, "labels", labels)
    valid = masking.valid_mask(mask)
    logits = [tf.cast(x, dtype) for x in logits]
    labels = tf.cast(labels, dtype)
    if mode == "masked":
        logits = [masking.where_valid(x, valid) for x in logits]
        labels = masking.where_valid(labels, valid)
    if check_numerics:
        logits = [
            tf.debugging.check_numerics(
                x, f"stage_logits[{i}] holds a non-finite value in a real (mask = 1) slot"
            )
            for i, x in enumerate(logits)
        ]
        labels = tf.debugging.check_numerics(
            labels, "labels holds a non-finite value in a real (mask = 1) slot"
        )
    return Prepared(logits, labels, tf.cast(valid, dtype), valid, dtype)


class ModeMasks(NamedTuple):
    """The masks a relaxed-sort loss uses under a ``mode`` (see :func:`mode_masks`).

    Attributes:
      count: ``[batch_size]`` number of real candidates (the sum of the mask).
      item_mask: 0/1 ``[batch_size, list_size]``: columns (items) that count.
      sort_mask: bool ``[batch_size, list_size]`` items that take part in the relaxed sort,
        or ``None`` (every slot, as the official code).
      group_mask: bool mask for label tie groups, or ``None`` (labels grouped over all slots).
      denom: ``[batch_size]`` divisor of the means over items.
    """

    count: tf.Tensor
    item_mask: tf.Tensor
    sort_mask: tf.Tensor | None
    group_mask: tf.Tensor | None
    denom: tf.Tensor


def mode_masks(mask: tf.Tensor, mode: str, valid: tf.Tensor | None = None) -> ModeMasks:
    """The reference/masked switch, declared once.

    ``"masked"``: the true per-candidate mask everywhere; means over the ``n`` real items.
    ``"reference"`` (the official kwai/LCRON code): a *prefix* mask ``1[i < n]`` built from the
    candidate count, every slot sorted, labels grouped over every slot, means over ``N``.

    Args:
      mask: float 0/1 ``[batch_size, list_size]`` (compute dtype).
      mode: ``"masked"`` or ``"reference"``.
      valid: the same mask as bool (default: derived from ``mask``).

    Returns:
      A :class:`ModeMasks`; float tensors in the dtype of ``mask``.
    """
    validation.check_choice("mode", mode, validation.MODE_CHOICES)
    dtype = mask.dtype
    count = tf.reduce_sum(mask, axis=1)
    if mode == "masked":
        valid = tf.cast(mask, tf.bool) if valid is None else valid
        return ModeMasks(count, mask, valid, valid, count)
    n_items = tf.shape(mask)[1]
    positions = tf.cast(tf.range(n_items), dtype)[None, :]
    prefix = tf.cast(positions < count[:, None], dtype)
    denom = tf.fill(tf.shape(count), tf.cast(n_items, dtype))
    return ModeMasks(count, prefix, None, None, denom)


# ----------------------------------------------------------------------------- reductions


def batch_mean(x: tf.Tensor) -> tf.Tensor:
    """Mean over the batch; 0 (with zero gradient) for an empty batch."""
    x = tf.convert_to_tensor(x)
    return tf.math.divide_no_nan(tf.reduce_sum(x), tf.cast(tf.size(x), x.dtype))


def uncertainty_weighted(terms: tf.Tensor, log_sigma: tf.Tensor | None) -> tf.Tensor:
    """``sum_s 0.5 / sigma_s**2 * terms[..., s] + ln(prod_s sigma_s)`` (LCRON Eq. 13 as coded).

    Args:
      terms: float ``[..., num_stages]``.
      log_sigma: float ``[num_stages]``, ``ln sigma_s`` (``None`` = every ``sigma = 1``).

    Returns:
      float ``[...]`` in the dtype of ``terms``.
    """
    if log_sigma is None:
        return 0.5 * tf.reduce_sum(terms, axis=-1)
    log_sigma = tf.cast(log_sigma, terms.dtype)
    weights = 0.5 * tf.exp(-2.0 * log_sigma)
    return tf.reduce_sum(terms * weights, axis=-1) + tf.reduce_sum(log_sigma)


__all__ = [
    "LossOptions",
    "LossSpec",
    "LossTerms",
    "ModeMasks",
    "Prepared",
    "WeightingOptions",
    "batch_mean",
    "compute_dtype",
    "mode_masks",
    "prepare_inputs",
    "resolve_options",
    "split_part",
    "stage_part",
    "uncertainty_weighted",
]
