"""Cascade selection layers (relaxed survival, hard top-k) for either Keras flavour (no Keras).

Each flavour combines these mixins with its ``keras.layers.Layer`` and registers them.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from lcron_tf.ops import inputs, validation
from lcron_tf.ops import ranking_metrics as rm


def _stages(stage_scores: tf.Tensor | Sequence[tf.Tensor]) -> list[tf.Tensor]:
    return inputs.split_stages(stage_scores)


class MaskArgMixin:
    """A layer whose ``call`` takes an explicit candidate ``mask`` (not a Keras mask)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        # `mask` is a regular argument here; declare support so Keras does not reject it,
        # and never propagate it to the outputs (see compute_mask).
        self.supports_masking = True

    def compute_mask(self, inputs: object, mask: object = None) -> None:
        return None


class CascadeSelectionMixin(MaskArgMixin):
    """Relaxed probability that each candidate survives the whole cascade.

    ``survival_i = prod_s P^{k_s}_s[i]`` (LCRON's lower bound, paper Eq. 7-8): the product
    over stages of each stage's relaxed top-``k_s`` membership, normalised by the detached
    column sums (Eq. 10) when ``normalize=True``. Differentiable: use it to analyse a
    model, or as a soft gate in your own loss. See
    :func:`lcron_tf.ops.ranking_metrics.relaxed_cascade_survival`.

    Args:
      ks: one int per stage, e.g. the serving quotas ``(30, 20)`` or LCRON's ``(10, 10)``.
      tau: temperature > 0 of the relaxed sort (LCRON: 50).
      sort: ``"neural"`` (NeuralSort) or ``"soft"`` (SoftSort).
      mode: ``"masked"`` (padded candidates excluded) or ``"reference"`` (official code:
        all slots sorted, prefix mask of the first ``sum(mask)`` slots afterwards).
      normalize: divide by the detached column sums (values in ``[0, 1]``).

    Call args:
      stage_scores: float ``[batch_size, num_stages, list_size]`` or a list of
        ``[batch_size, list_size]``, first stage first.
      mask: optional 0/1 ``[batch_size, list_size]``; 0 = padded slot (default: all valid).

    Returns:
      float ``[batch_size, list_size]`` survival probabilities; 0 for padded candidates.
    """

    def __init__(
        self,
        ks: Sequence[int],
        tau: float = 50.0,
        sort: str = "neural",
        mode: str = validation.DEFAULT_MODE,
        normalize: bool = True,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(ks, int) or not isinstance(ks, Sequence) or len(ks) == 0:
            raise ValueError(
                f"`ks` must be a non-empty sequence with one int per stage. Received: ks={ks!r}"
            )
        self.ks = [validation.check_k(f"ks[{i}]", k, None) for i, k in enumerate(ks)]
        self.tau = validation.check_tau("tau", tau)
        self.sort = validation.check_choice("sort", sort, validation.SORT_CHOICES)
        self.mode = validation.check_choice("mode", mode, validation.MODE_CHOICES)
        self.normalize = bool(normalize)

    def call(
        self, stage_scores: tf.Tensor | Sequence[tf.Tensor], mask: tf.Tensor | None = None
    ) -> tf.Tensor:
        return rm.relaxed_cascade_survival(
            _stages(stage_scores), self.ks, mask, tau=self.tau, sort=self.sort,
            mode=self.mode, normalize=self.normalize,
        )

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "ks": list(self.ks),
            "tau": self.tau,
            "sort": self.sort,
            "mode": self.mode,
            "normalize": self.normalize,
        }


class CascadeTopKMixin(MaskArgMixin):
    """Hard cascade selection for inference: top-q1 by stage 1, then top-q2 of those, ...

    Ties are broken deterministically: higher score first, equal scores by lower candidate
    index; padded candidates are never selected, and a request with fewer valid
    candidates than a quota keeps only its valid ones.

    Args:
      quotas: strictly decreasing ints, one per stage, first stage first (e.g. ``(30, 20)``).

    Call args:
      stage_scores: float ``[batch_size, num_stages, list_size]`` or a list of
        ``[batch_size, list_size]``, first stage first.
      mask: optional 0/1 ``[batch_size, list_size]``; 0 = padded slot (default: all valid).

    Returns:
      ``(indices, survival)``: int32 ``[batch_size, quotas[-1]]`` selected candidate
      indices ordered by the last stage's score (``-1`` where a request has fewer
      selectable candidates), and float32 0/1 ``[batch_size, list_size]`` survival mask.

    Raises:
      ValueError: ``quotas`` not strictly decreasing or < 1 (construction); number of
        stages != number of quotas or ``quotas[0] > list_size`` (call).
    """

    def __init__(self, quotas: Sequence[int], **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.quotas = list(rm.check_quotas(quotas))

    def call(
        self, stage_scores: tf.Tensor | Sequence[tf.Tensor], mask: tf.Tensor | None = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        return rm.cascade_topk(_stages(stage_scores), self.quotas, mask)

    def get_config(self) -> dict:
        return {**super().get_config(), "quotas": list(self.quotas)}


__all__ = ["CascadeSelectionMixin", "CascadeTopKMixin", "MaskArgMixin"]
