"""``LcronTask``: LCRON (or any cascade loss) as a TFRS task for your own ``tfrs.Model``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import tensorflow as tf
import tensorflow_recommenders as tfrs

from lcron_tf._keras import keras, register_serializable
from lcron_tf.losses.lcron import LcronLoss
from lcron_tf.ops import contract, inputs


def _check_loss(loss: object) -> None:
    if not callable(getattr(loss, "terms", None)) and not callable(
        getattr(loss, "per_request", None)
    ):
        raise ValueError(
            "`loss` must follow the cascade-loss contract: a method "
            "`terms(stage_logits: list of [B, N], labels [B, N], mask [B, N]) -> LossTerms` "
            "or `per_request(...) -> [B]` (e.g. any lcron_tf.losses.CascadeLoss). "
            f"Received: loss={loss!r}"
        )


def _metric_name(prefix: str, part: str, stage_names: Sequence[str] | None) -> str:
    base, stage = contract.split_part(part)
    base = base.replace("/", "_")
    if stage is None:
        return f"{prefix}_{base}"
    return f"{prefix}_{base}_{stage_names[stage]}"


@register_serializable
class LcronTask(keras.layers.Layer, tfrs.tasks.Task):
    """A TFRS task (in the style of ``tfrs.tasks.Ranking``) for cascade losses.

    Call it from the ``compute_loss`` of any ``tfrs.Model`` with the scores of every stage::

        self.task = LcronTask(stage_names=("retrieval", "ranking"),
                              metrics=[JointRecall(k=10, quotas=(30, 20))])
        ...
        return self.task(batch["label"], [retrieval_scores, ranking_scores], batch["mask"])

    The per-request losses are reduced with ``tf.nn.compute_average_loss`` (divided by
    the GLOBAL batch size), so the loss and gradients do not depend on the number of
    replicas under a ``tf.distribute`` strategy. The loss's uncertainty-weighting layer
    (``LcronLoss.weighting``, the learned ``sigma`` per stage) is tracked by this layer,
    so it trains with the model's single optimizer.

    With ``track_terms=True``, the named parts of the loss (``loss.part_names``, e.g.
    LCRON's ``e2e``, ``single/<s>``, ``sigma/<s>``) are tracked as Keras ``Mean`` metrics
    named ``<loss.metric_prefix>_<part>`` and appear in ``fit`` History / TensorBoard:
    ``lcron_e2e`` and, when ``stage_names`` is given (per-stage parts need it),
    ``lcron_single_<stage>`` and ``lcron_sigma_<stage>`` (the mean over the epoch's steps of
    the learned sigma); ARF logs ``arf_relax_<stage>``, ``arf_global_<stage>``, ...

    Args:
      loss: a cascade loss with ``per_request(stage_logits, labels, mask) -> [B]``
        (default: ``LcronLoss()``).
      metrics: Keras metrics updated with ``(y_true={"labels", "mask"}, y_pred=[B, S, N])``,
        e.g. :class:`~lcron_tf.metrics.JointRecall`.
      stage_names: one name per stage (first stage first); sizes the per-stage term
        metrics and builds the weighting layer eagerly.
      track_terms: track the loss's named parts as metrics.
      jit_compile: compile the loss and the metric updates (forward and gradient) on their
        own with ``tf.function(jit_compile=True)``, while the rest of the model's step
        stays as it is. This is how a model whose towers start with ``StringLookup`` (string
        ops cannot be XLA-compiled) or that keeps a TFRS ``FactorizedTopK`` evaluation
        (tf.data ops) trains the LCRON math under XLA: compile the MODEL without
        ``jit_compile`` and give the task ``jit_compile=True`` (docs/tfrs.md). Keep the
        batch shape fixed (``drop_remainder=True``): every new shape recompiles.
      name: layer name.
    """

    def __init__(
        self,
        loss: object | None = None,
        metrics: Sequence[keras.metrics.Metric] | None = None,
        stage_names: Sequence[str] | None = None,
        track_terms: bool = True,
        jit_compile: bool = False,
        name: str = "lcron_task",
        **kwargs: object,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.supports_masking = True  # `mask` is an ordinary call argument here
        loss = LcronLoss() if loss is None else loss
        _check_loss(loss)
        self._loss = loss
        self.task_metrics = list(metrics or [])
        if stage_names is not None:
            if isinstance(stage_names, str) or len(stage_names) == 0:
                raise ValueError(
                    "`stage_names` must be a non-empty sequence of strings. "
                    f"Received: stage_names={stage_names!r}"
                )
            if len(set(stage_names)) != len(stage_names):
                raise ValueError(f"`stage_names` must be unique. Received: {stage_names!r}")
            stage_names = [str(s) for s in stage_names]
        self.stage_names = stage_names
        self.track_terms = bool(track_terms)
        # Track the learned uncertainty weights so they are trainable variables of the model.
        weighting = getattr(loss, "weighting", None)
        self.loss_weighting = weighting if isinstance(weighting, keras.layers.Layer) else None
        if self.loss_weighting is not None and stage_names is not None:
            if callable(getattr(loss, "build_weighting", None)):
                loss.build_weighting(len(stage_names))
            elif not self.loss_weighting.built:
                self.loss_weighting.build(tf.TensorShape([None, len(stage_names)]))
        term_metrics = {}
        part_names = getattr(loss, "part_names", None)
        if self.track_terms and callable(part_names):
            prefix = getattr(loss, "metric_prefix", None) or getattr(
                getattr(loss, "spec", None), "key", "loss"
            )
            num = None if stage_names is None else len(stage_names)
            for part in part_names(num):
                term_metrics[part] = keras.metrics.Mean(
                    name=_metric_name(prefix, part, stage_names)
                )
        # Assigned whole: Keras collects the Metric objects of an attribute at assignment.
        self.term_metrics = term_metrics
        self.jit_compile = bool(jit_compile)
        self._compiled_call = None  # built on first use (see `call`)

    @property
    def loss(self) -> object:
        """The cascade loss object."""
        return self._loss

    def compute_mask(self, inputs: object, mask: object = None) -> None:
        return None

    # -- the two halves of `call`, usable separately (CascadeModel jit-compiles the first) --

    def compute(
        self,
        labels: tf.Tensor,
        stage_scores: tf.Tensor | Sequence[tf.Tensor],
        mask: tf.Tensor | None = None,
        sample_weight: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, dict]:
        """The scalar loss and the loss terms, without touching any metric.

        Args: as :meth:`call`.

        Returns:
          ``(loss, terms)``: float32 scalar (the per-replica share of the global mean) and
          the loss's :class:`~lcron_tf.ops.contract.LossTerms` (parts ``{}`` for a loss with
          only ``per_request``).
        """
        labels, mask = self._labels_mask(labels, mask)
        stages = inputs.split_stages(stage_scores)
        if callable(getattr(self._loss, "terms", None)):
            terms = self._loss.terms(stages, labels, mask)
        else:
            terms = contract.LossTerms(self._loss.per_request(stages, labels, mask), {})
        per_request = tf.cast(terms.per_request, tf.float32)
        loss = tf.nn.compute_average_loss(per_request, sample_weight=self._weights(sample_weight))
        return loss, terms

    def update_metrics(
        self,
        labels: tf.Tensor,
        stage_scores: tf.Tensor | Sequence[tf.Tensor],
        mask: tf.Tensor | None = None,
        sample_weight: tf.Tensor | None = None,
        terms: contract.LossTerms | None = None,
    ) -> list:
        """Update the task's metrics (and the part metrics from ``terms``); returns the ops."""
        labels, mask = self._labels_mask(labels, mask)
        weights = self._weights(sample_weight)
        y_true = {"labels": labels, "mask": mask}
        y_pred = tf.stack(inputs.split_stages(stage_scores), axis=1)
        ops = [m.update_state(y_true, y_pred, sample_weight=weights) for m in self.task_metrics]
        if terms is not None:
            for part, metric in self.term_metrics.items():
                if part in terms.parts:
                    values = tf.cast(terms.parts[part], tf.float32)
                    ops.append(metric.update_state(values, weights))
        return [op for op in ops if op is not None]

    def call(
        self,
        labels: tf.Tensor,
        stage_scores: tf.Tensor | Sequence[tf.Tensor],
        mask: tf.Tensor | None = None,
        sample_weight: tf.Tensor | None = None,
        training: bool = False,
        compute_metrics: bool = True,
    ) -> tf.Tensor:
        """Compute the task loss and update the metrics.

        Args:
          labels: float ``[batch_size, list_size]`` (higher = better; label < 0 marks a
            padded slot when ``mask`` is None), or a dict ``{"labels", "mask"}``.
          stage_scores: float ``[batch_size, num_stages, list_size]`` or a list of
            ``num_stages`` float ``[batch_size, list_size]`` tensors, first stage first.
          mask: optional float 0/1 ``[batch_size, list_size]``, 1 = real candidate.
          sample_weight: optional float ``[batch_size]`` or ``[batch_size, 1]``
            per-request weights.
          training: whether this is a training step (unused; kept for the TFRS contract).
          compute_metrics: update the metrics (set ``False`` to skip them).

        Returns:
          float32 scalar loss: ``sum_b w_b * loss_b / global_batch_size``.
        """
        del training
        if self.jit_compile:
            if self._compiled_call is None:
                # Outside Keras attribute tracking: a cache, not state to save.
                object.__setattr__(
                    self, "_compiled_call", tf.function(self._loss_and_metrics, jit_compile=True)
                )
            labels_mask = self._labels_mask(labels, mask)
            return self._compiled_call(
                labels_mask[0], stage_scores, labels_mask[1], sample_weight, compute_metrics
            )
        return self._loss_and_metrics(labels, stage_scores, mask, sample_weight, compute_metrics)

    def _loss_and_metrics(
        self,
        labels: tf.Tensor,
        stage_scores: tf.Tensor | Sequence[tf.Tensor],
        mask: tf.Tensor | None,
        sample_weight: tf.Tensor | None,
        compute_metrics: bool,
    ) -> tf.Tensor:
        """The body of :meth:`call` (the unit that ``jit_compile=True`` compiles)."""
        loss, terms = self.compute(labels, stage_scores, mask, sample_weight)
        if not compute_metrics:
            return loss
        ops = self.update_metrics(labels, stage_scores, mask, sample_weight, terms)
        with tf.control_dependencies(ops):
            return tf.identity(loss)

    @staticmethod
    def _labels_mask(
        labels: tf.Tensor | Mapping[str, tf.Tensor], mask: tf.Tensor | None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        if mask is not None and not isinstance(labels, Mapping):
            labels = {"labels": labels, "mask": mask}
        return inputs.split_labels_mask(labels)

    @staticmethod
    def _weights(sample_weight: tf.Tensor | None) -> tf.Tensor | None:
        if sample_weight is None:
            return None
        return tf.reshape(tf.cast(sample_weight, tf.float32), [-1])

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "loss": keras.utils.serialize_keras_object(self._loss),
            "metrics": [keras.utils.serialize_keras_object(m) for m in self.task_metrics],
            "stage_names": None if self.stage_names is None else list(self.stage_names),
            "track_terms": self.track_terms,
            "jit_compile": self.jit_compile,
        }

    @classmethod
    def from_config(cls, config: dict) -> LcronTask:
        config = dict(config)
        config["loss"] = keras.utils.deserialize_keras_object(config["loss"])
        config["metrics"] = [keras.utils.deserialize_keras_object(m) for m in config["metrics"]]
        return cls(**config)
