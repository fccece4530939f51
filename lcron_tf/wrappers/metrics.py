"""The cascade-ranking metrics with the official LCRON definitions, for either Keras flavour.

Every metric is a streaming weighted mean over requests of a per-request value computed by
:mod:`lcron_tf.ops.ranking_metrics` (exact definitions and the deterministic tie rule there:
higher score first, equal scores by lower candidate index, padded candidates never selected).
Each flavour combines these mixins with its ``keras.metrics.Mean``.

Inputs (``update_state(y_true, y_pred, sample_weight=None)``):
  y_true: float ``[batch_size, list_size]`` labels (label < 0 = padded slot), or a dict
    ``{"labels": [B, N], "mask": [B, N]}`` (``"label"`` is accepted too).
  y_pred: float ``[batch_size, num_stages, list_size]``, a list of ``num_stages`` float
    ``[batch_size, list_size]`` tensors (first stage first), or, for the single-stage
    metrics, one ``[batch_size, list_size]`` tensor.
  sample_weight: optional float ``[batch_size]`` or ``[batch_size, 1]`` per-request weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from lcron_tf.ops import inputs, validation
from lcron_tf.ops import ranking_metrics as rm


def _stage_tag(stage: int) -> str:
    if stage >= 0:
        return f"stage{stage}"
    return "last_stage" if stage == -1 else f"stage_m{-stage}"


def _check_stage(stage: int) -> int:
    if isinstance(stage, bool) or not isinstance(stage, int):
        raise ValueError(f"`stage` must be an int. Received: stage={stage!r}")
    return stage


class CascadeMetricMixin:
    """Base: a weighted mean over requests of :meth:`per_request`."""

    def per_request(
        self, stage_scores: list[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> tf.Tensor:
        """Metric value of each request.

        Args:
          stage_scores: list of float ``[batch_size, list_size]``, first stage first.
          labels: float ``[batch_size, list_size]``.
          mask: float 0/1 ``[batch_size, list_size]``.

        Returns:
          float ``[batch_size]``.
        """
        raise NotImplementedError

    def update_state(
        self,
        y_true: tf.Tensor | Mapping[str, tf.Tensor],
        y_pred: tf.Tensor | Sequence[tf.Tensor],
        sample_weight: tf.Tensor | None = None,
    ) -> Any:
        labels, mask = inputs.split_labels_mask(y_true)
        if not isinstance(y_pred, Sequence) and tf.convert_to_tensor(y_pred).shape.rank == 2:
            stages = [tf.convert_to_tensor(y_pred)]
        else:
            stages = inputs.split_stages(y_pred)
        values = tf.cast(self.per_request(stages, labels, mask), self.dtype)  # [B]
        if sample_weight is not None:
            sample_weight = tf.reshape(tf.cast(sample_weight, self.dtype), [-1])
        return super().update_state(values, sample_weight=sample_weight)

    def _stage(self, stages: list[tf.Tensor], stage: int) -> tf.Tensor:
        if not -len(stages) <= stage < len(stages):
            raise ValueError(
                f"`stage` must index one of the {len(stages)} stages of `y_pred`. "
                f"Received: stage={stage}"
            )
        return stages[stage]


class JointRecallMixin(CascadeMetricMixin):
    """Recall@k@q_T through the hard cascade (paper Eq. 2; the golden LCRON metric).

    Per request: stage 1 keeps its top ``quotas[0]`` valid candidates, stage ``s`` keeps its
    top ``quotas[s]`` of those, and the value is ``|survivors ∩ GT_k| / k`` where ``GT_k`` =
    the top-``k`` valid candidates by label. RecFlow two-stage:
    ``JointRecall(k=10, quotas=(30, 20))``; three-stage ``quotas=(40, 30, 20)``.

    Args:
      k: size of the ground-truth set (``1 <= k <= list_size``).
      quotas: strictly decreasing serving quotas, one per stage, first stage first.
      name: metric name (default ``"joint_recall_at_{k}_at_{quotas[-1]}"``).
      dtype: metric dtype.

    Raises:
      ValueError: bad ``k`` or ``quotas`` (construction); ``k`` or ``quotas[0]`` >
        list_size, or number of stages != ``len(quotas)`` (first update).
    """

    def __init__(
        self, k: int = 10, quotas: Sequence[int] = (30, 20), name: str | None = None,
        dtype: Any = None,
    ) -> None:
        k = validation.check_k("k", k, None)
        quotas = rm.check_quotas(quotas)
        super().__init__(name=name or f"joint_recall_at_{k}_at_{quotas[-1]}", dtype=dtype)
        self.k = k
        self.quotas = quotas

    def per_request(
        self, stage_scores: list[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> tf.Tensor:
        if len(stage_scores) != len(self.quotas):
            raise ValueError(
                f"the number of stages in `y_pred` ({len(stage_scores)}) must equal the "
                f"number of `quotas` ({len(self.quotas)}). Received: quotas={self.quotas}"
            )
        return rm.joint_recall(stage_scores, labels, mask, self.k, self.quotas)

    def get_config(self) -> dict:
        return {**super().get_config(), "k": self.k, "quotas": list(self.quotas)}


class StageRecallMixin(CascadeMetricMixin):
    """Recall@k@m of one stage over all valid candidates: ``|top-m(scores) ∩ GT_k| / k``.

    The official per-model side metric (two-stage: DSSM Recall@10@30, DIN Recall@10@20).

    Args:
      k: size of the ground-truth set (``1 <= k <= list_size``).
      m: number of candidates the stage keeps (``1 <= m <= list_size``).
      stage: index of the stage in ``y_pred`` (negative counts from the end; default last).
      name: metric name (default ``"{stageN|last_stage}_recall_at_{k}_at_{m}"``).
      dtype: metric dtype.
    """

    def __init__(
        self, k: int = 10, m: int = 20, stage: int = -1, name: str | None = None,
        dtype: Any = None,
    ) -> None:
        k = validation.check_k("k", k, None)
        m = validation.check_k("m", m, None)
        stage = _check_stage(stage)
        super().__init__(name=name or f"{_stage_tag(stage)}_recall_at_{k}_at_{m}", dtype=dtype)
        self.k, self.m, self.stage = k, m, stage

    def per_request(
        self, stage_scores: list[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> tf.Tensor:
        return rm.stage_recall(self._stage(stage_scores, self.stage), labels, mask, self.k, self.m)

    def get_config(self) -> dict:
        return {**super().get_config(), "k": self.k, "m": self.m, "stage": self.stage}


class NdcgMixin(CascadeMetricMixin):
    """NDCG@k of one stage, as sklearn's ``ndcg_score`` (linear gains, tie-averaged DCG).

    Args:
      k: cut-off (``1 <= k <= list_size``).
      stage: index of the stage in ``y_pred`` (negative counts from the end; default last).
      masked: ``False`` (default) = the official evaluation: every slot counts with its
        score and raw label, padded ones included; ``True`` = padded slots get gain 0 and
        rank after every valid candidate.
      name: metric name (default ``"{stageN|last_stage}_ndcg_at_{k}"``).
      dtype: metric dtype.
    """

    def __init__(
        self, k: int = 10, stage: int = -1, masked: bool = False, name: str | None = None,
        dtype: Any = None,
    ) -> None:
        k = validation.check_k("k", k, None)
        stage = _check_stage(stage)
        super().__init__(name=name or f"{_stage_tag(stage)}_ndcg_at_{k}", dtype=dtype)
        self.k, self.stage, self.masked = k, stage, bool(masked)

    def per_request(
        self, stage_scores: list[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> tf.Tensor:
        scores = self._stage(stage_scores, self.stage)
        return rm.ndcg(scores, labels, self.k, mask, masked=self.masked)

    def get_config(self) -> dict:
        return {**super().get_config(), "k": self.k, "stage": self.stage, "masked": self.masked}


__all__ = ["CascadeMetricMixin", "JointRecallMixin", "NdcgMixin", "StageRecallMixin"]
