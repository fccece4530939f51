"""Keras classes of LCRON: the full loss, L_e2e alone, and L_single alone."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from lcron_tf._keras import register_serializable
from lcron_tf.losses.base import CascadeLoss, UncertaintyWeightedMixin
from lcron_tf.ops import cascade, validation


class _LcronTermsLoss(CascadeLoss):
    """Shared options and config of the LCRON loss classes (see ``lcron_loss_terms``)."""

    def __init__(
        self,
        gt_num: int = 10,
        stage_k: int | Sequence[int] = 10,
        tau: float = 50.0,
        sort: str = "neural",
        mode: str = "masked",
        label_matrix: str | None = None,
        impl: str = "auto",
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        validation.check_k("gt_num", gt_num, None)
        if isinstance(stage_k, int):
            validation.check_k("stage_k", stage_k, None)
        else:
            stage_k = [validation.check_k(f"stage_k[{i}]", k, None) for i, k in enumerate(stage_k)]
        self.gt_num = int(gt_num)
        self.stage_k = stage_k if isinstance(stage_k, int) else list(stage_k)
        self.tau = validation.check_positive("tau", tau)
        self.sort = validation.check_choice("sort", sort, validation.SORT_CHOICES)
        self.mode = validation.check_choice("mode", mode, validation.MODE_CHOICES)
        if label_matrix is not None:
            validation.check_choice("label_matrix", label_matrix, cascade.LABEL_MATRIX_CHOICES)
        self.label_matrix = label_matrix
        self.impl = validation.check_choice("impl", impl, validation.IMPL_CHOICES)

    def terms(self, stage_logits: Sequence[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor) -> dict:
        """The dict of :func:`lcron_tf.ops.lcron_loss_terms` for these inputs."""
        return cascade.lcron_loss_terms(
            stage_logits,
            labels,
            mask,
            gt_num=self.gt_num,
            stage_k=self.stage_k,
            tau=self.tau,
            sort=self.sort,
            mode=self.mode,
            label_matrix=self.label_matrix,
            impl=self.impl,
        )

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "gt_num": self.gt_num,
            "stage_k": self.stage_k,
            "tau": self.tau,
            "sort": self.sort,
            "mode": self.mode,
            "label_matrix": self.label_matrix,
            "impl": self.impl,
        }


@register_serializable
class LcronLoss(UncertaintyWeightedMixin, _LcronTermsLoss):
    """LCRON: ``L_e2e + sum_s 0.5 / sigma_s**2 * L_single_s + ln(prod_s sigma_s)``.

    ``sigma_s`` are learned (one per stage) in an :class:`UncertaintyWeighting` layer held
    by ``self.weighting``; they train with the model's optimizer when the layer is tracked
    by the model: ``LcronTask`` and ``CascadeModel`` do this. With a plain
    ``model.compile(loss=LcronLoss())`` assign ``model.lcron_weighting = loss.weighting``
    (or pass ``learn_weights=False`` to keep every ``sigma = 1``).

    Args:
      gt_num: size of the ground-truth set (top ``gt_num`` labels).
      stage_k: int or one int per stage, the ``k`` of each stage's relaxed top-k (the
        paper uses 10 = gt_num, not the serving quotas).
      tau: relaxed-sort temperature (paper: 50).
      sort: ``"neural"`` or ``"soft"``.
      mode: ``"masked"`` (default: padded candidates fully excluded) or ``"reference"``
        (bit-faithful to the official code, prefix mask and all).
      label_matrix: ``None`` (mode's default), ``"soft"`` or ``"binary"``.
      impl: ``"auto"`` (dense N x N path for small lists, the exact memory-lean path for
        long ones), ``"dense"`` or ``"lean"``; see :func:`lcron_tf.ops.normalized_up_down`.
      learn_weights: learn the ``sigma_s``; ``False`` fixes them at 1.
      init_sigma: initial ``sigma_s`` (official: 1.0).
      **kwargs: ``reduction`` and ``name`` of ``keras.losses.Loss``.

    Call args: see :class:`CascadeLoss`. Returns per-request losses ``[batch_size]``
    before the Keras reduction (the ``ln sigma`` regulariser is added to every request,
    so its batch mean is the official total).
    """

    def __init__(
        self,
        gt_num: int = 10,
        stage_k: int | Sequence[int] = 10,
        tau: float = 50.0,
        sort: str = "neural",
        mode: str = "masked",
        label_matrix: str | None = None,
        impl: str = "auto",
        learn_weights: bool = True,
        init_sigma: float = 1.0,
        name: str = "lcron_loss",
        **kwargs: object,
    ) -> None:
        super().__init__(
            gt_num, stage_k, tau, sort, mode, label_matrix, impl, name=name, **kwargs
        )
        self._init_weighting(learn_weights, init_sigma, name)

    def terms(self, stage_logits: Sequence[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor) -> dict:
        """``lcron_loss_terms`` plus ``"per_request"`` ``[B]`` (the weighted total per request),
        ``"weighted_total"`` (its mean) and ``"sigma"`` ``[num_stages]``."""
        t = super().terms(stage_logits, labels, mask)
        singles = tf.stack(t["single_per_request"], axis=1)  # [B, S]
        weighted = self._weighted(singles)
        t["per_request"] = t["e2e_per_request"] + weighted
        t["weighted_total"] = tf.reduce_mean(t["per_request"])
        t["sigma"] = self.weighting.sigma
        return t

    def per_request(
        self, stage_logits: Sequence[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> tf.Tensor:
        return self.terms(stage_logits, labels, mask)["per_request"]

    def get_config(self) -> dict:
        return {**super().get_config(), **self._weighting_config()}


@register_serializable
class CascadeRecallLoss(_LcronTermsLoss):
    """``L_e2e`` alone: BCE on the relaxed end-to-end survival lower bound.

    Same arguments as :class:`LcronLoss` without the weighting. Returns ``[batch_size]``.
    """

    def __init__(self, *args: object, name: str = "cascade_recall_loss", **kwargs: object) -> None:
        super().__init__(*args, name=name, **kwargs)

    def per_request(
        self, stage_logits: Sequence[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> tf.Tensor:
        return self.terms(stage_logits, labels, mask)["e2e_per_request"]


@register_serializable
class StageTopKLoss(_LcronTermsLoss):
    """``sum_s L_single_s``: each stage's own relaxed top-k BCE, unweighted.

    With a single stage this is LCRON's ``L_single`` (and, with ``stage_k = m``, ARF-v2's
    ``L_relax``). Same arguments as :class:`LcronLoss` without the weighting.
    Returns ``[batch_size]``.
    """

    def __init__(self, *args: object, name: str = "stage_topk_loss", **kwargs: object) -> None:
        super().__init__(*args, name=name, **kwargs)

    def per_request(
        self, stage_logits: Sequence[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> tf.Tensor:
        return tf.add_n(self.terms(stage_logits, labels, mask)["single_per_request"])
