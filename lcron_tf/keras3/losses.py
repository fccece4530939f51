"""Keras 3 cascade losses: LCRON, its two partial forms and the seven baselines.

Each class is :class:`~lcron_tf.wrappers.losses.CascadeLossMixin` on ``keras.losses.Loss``
with the :class:`~lcron_tf.ops.contract.LossSpec` of its pure-TF function; options, call
convention and config are those of the Keras 2 classes of the same name (see their
docstrings in :mod:`lcron_tf.losses` and the options dataclasses in :mod:`lcron_tf.ops`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from lcron_tf.ops import baselines, contract, lcron
from lcron_tf.wrappers.losses import CascadeLossMixin, UncertaintyWeightingMixin, build_loss

register = keras.saving.register_keras_serializable(package="lcron_tf")


@register
class UncertaintyWeighting(UncertaintyWeightingMixin, keras.layers.Layer):
    """Learned per-stage ``sigma_s`` (as ``log_sigma``) of the weighted losses (Keras 3)."""

    def __init__(self, init_sigma: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._set_init_sigma(init_sigma)

    def _constant(self, value: float) -> Any:
        return keras.initializers.Constant(value)


class CascadeLoss(CascadeLossMixin, keras.losses.Loss):
    """A loss over the scores of every stage of a cascade, on ``keras.losses.Loss``.

    Args:
      *args, **kwargs: the loss's options (its ``spec.options`` dataclass).
      name, reduction, dtype: of ``keras.losses.Loss`` (string reductions, default
        ``"sum_over_batch_size"``).

    Returns ``[batch_size]`` per-request losses before the reduction. Weighted losses (LCRON,
    ARF, ARF-v2) hold their learned ``sigma`` in ``self.weighting``: see
    :func:`track_loss_weights`.
    """

    weighting_class = UncertaintyWeighting

    def __init__(
        self,
        *args: Any,
        name: str | None = None,
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
        **kwargs: Any,
    ) -> None:
        options = self._parse_options(args, kwargs)
        super().__init__(name=name or self.default_name, reduction=reduction, dtype=dtype)
        self._finish_init(options)


def _loss_class(
    class_name: str, spec: contract.LossSpec, default_name: str, prefix: str | None = None
) -> type[CascadeLoss]:
    doc = (f"{class_name} on Keras 3: :func:`{spec.fn.__module__}.{spec.fn.__name__}`; options "
           f":class:`{spec.options.__module__}.{spec.options.__name__}`.")
    cls = type(class_name, (CascadeLoss,), {
        "spec": spec, "default_name": default_name, "metric_prefix": prefix, "__doc__": doc,
        "__module__": __name__,
    })
    return register(cls)


LcronLoss = _loss_class("LcronLoss", lcron.LCRON, "lcron_loss", "lcron")
CascadeRecallLoss = _loss_class("CascadeRecallLoss", lcron.CASCADE_RECALL, "cascade_recall_loss",
                                "lcron")
StageTopKLoss = _loss_class("StageTopKLoss", lcron.STAGE_TOPK, "stage_topk_loss", "lcron")
BceLoss = _loss_class("BceLoss", baselines.BCE, "bce_loss")
IccLoss = _loss_class("IccLoss", baselines.ICC, "icc_loss")
RankFlowLoss = _loss_class("RankFlowLoss", baselines.RANKFLOW, "rankflow_loss")
FsRankNetLoss = _loss_class("FsRankNetLoss", baselines.FS_RANKNET, "fs_ranknet_loss")
FsLambdaLoss = _loss_class("FsLambdaLoss", baselines.FS_LAMBDALOSS, "fs_lambdaloss")
ArfLoss = _loss_class("ArfLoss", baselines.ARF, "arf_loss")
ArfV2Loss = _loss_class("ArfV2Loss", baselines.ARF_V2, "arf_v2_loss")

LOSSES: dict[str, type[CascadeLoss]] = {
    cls.spec.key: cls
    for cls in (BceLoss, IccLoss, RankFlowLoss, FsRankNetLoss, FsLambdaLoss, ArfLoss, ArfV2Loss,
                LcronLoss)
}


def get(name: str, /, *, schema: Any = None, quotas: Sequence[int] | None = None,
        **overrides: Any) -> CascadeLoss:
    """The Keras 3 loss registered under ``name``, with its dataset defaults.

    As :func:`lcron_tf.losses.registry.get` (same names, same defaults from ``schema`` /
    ``quotas``, overrides win; ``name``, ``reduction`` and ``dtype`` go to the Keras base).

    Raises:
      ValueError: an unknown name or option, or an invalid option value.
    """
    return build_loss(LOSSES, name, schema, quotas, overrides, ("name", "reduction", "dtype"))


def track_loss_weights(
    model: keras.Model, loss: CascadeLoss, num_stages: int | None = None
) -> None:
    """Make ``model`` own the learned ``sigma`` of a weighted loss, so its optimizer trains them.

    Builds the loss's weighting for ``num_stages`` stages (default: ``model``'s output
    shape ``[batch_size, num_stages, list_size]``) and assigns it to
    ``model.lcron_loss_weighting``; Keras 3 then tracks its variables with the model's. Call
    it before ``fit``. Losses without learned weights need nothing (this is a no-op).
    The ``sigma`` are training state: ``model.save`` keeps the model's layers, not the loss.

    Raises:
      ValueError: ``num_stages`` not given and not readable from the model's output shape.
    """
    weighting = getattr(loss, "weighting", None)
    if weighting is None:
        return
    if num_stages is None:
        shape = getattr(model, "output_shape", None)
        if not isinstance(shape, tuple) or len(shape) != 3 or shape[1] is None:
            raise ValueError(
                "pass `num_stages`: it cannot be read from the model's output shape "
                f"(expected [batch_size, num_stages, list_size]). Received: {shape!r}"
            )
        num_stages = int(shape[1])
    loss.build_weighting(num_stages)
    model.lcron_loss_weighting = weighting


__all__ = [
    "LOSSES",
    "ArfLoss",
    "ArfV2Loss",
    "BceLoss",
    "CascadeLoss",
    "CascadeRecallLoss",
    "FsLambdaLoss",
    "FsRankNetLoss",
    "IccLoss",
    "LcronLoss",
    "RankFlowLoss",
    "StageTopKLoss",
    "UncertaintyWeighting",
    "get",
    "track_loss_weights",
]
