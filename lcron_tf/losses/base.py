"""The one Keras 2 (tf_keras) wrapper of every cascade loss.

A registered loss class is a few lines: it names the :class:`~lcron_tf.ops.contract.LossSpec`
of its pure-TF loss function (which declares the options dataclass, the part names and
whether the loss has learned per-stage weights). The behaviour shared with the Keras 3
flavour (options, call convention, config, learned weights) is
:class:`lcron_tf.wrappers.losses.CascadeLossMixin`; this module adds the tf_keras base.
"""

from __future__ import annotations

from typing import Any

from lcron_tf._keras import keras
from lcron_tf.losses.weighting import UncertaintyWeighting
from lcron_tf.wrappers.losses import CascadeLossMixin


class CascadeLoss(CascadeLossMixin, keras.losses.Loss):
    """A loss over the scores of every stage of a cascade (the cascade-loss contract).

    Per-stage scores + labels + mask in, one loss per request out; Keras then applies
    ``sample_weight`` and the reduction (see :class:`~lcron_tf.wrappers.losses.
    CascadeLossMixin` for the call convention, :meth:`terms` and :meth:`per_request`).
    Models that reduce losses themselves (``LcronTask``, ``CascadeModel``, for
    ``tf.distribute``) call :meth:`terms` or :meth:`per_request` directly.

    Losses with learned per-stage weights hold them in an :class:`UncertaintyWeighting`
    layer, ``self.weighting`` (built on the first call, or by :meth:`build_weighting`); a
    model must track it for the ``sigma`` to train: ``LcronTask`` and ``CascadeModel`` do;
    with a plain ``model.compile(loss=...)`` assign it to any model attribute, e.g.
    ``model.loss_weighting = loss.weighting``.

    Args:
      *args, **kwargs: the loss's options (see its ``spec.options`` dataclass).
      reduction, name: of ``keras.losses.Loss``.
    """

    weighting_class = UncertaintyWeighting

    def __init__(
        self,
        *args: Any,
        reduction: str = keras.losses.Reduction.AUTO,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        options = self._parse_options(args, kwargs)
        super().__init__(reduction=reduction, name=name or self.default_name)
        self._finish_init(options)


__all__ = ["CascadeLoss"]
