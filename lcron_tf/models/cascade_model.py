"""``CascadeModel``: every stage of a cascade in one ``tfrs.Model``, trained end to end."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import tensorflow as tf
import tensorflow_recommenders as tfrs

from lcron_tf._keras import keras
from lcron_tf.layers.cascade import CascadeTopK
from lcron_tf.losses.lcron import LcronLoss
from lcron_tf.metrics.ranking import JointRecall, StageRecall
from lcron_tf.models.task import LcronTask
from lcron_tf.models.towers import DinRanker, DssmRetrieval, MlpPreRanker
from lcron_tf.ops import ranking_metrics as rm
from lcron_tf.ops import validation
from lcron_tf.schema import CascadeSchema

_DEFAULT_NAMES = {
    1: ("ranking",),
    2: ("retrieval", "ranking"),
    3: ("retrieval", "pre_ranking", "ranking"),
}


def default_metrics(
    quotas: Sequence[int], gt_num: int, stage_names: Sequence[str]
) -> list[keras.metrics.Metric]:
    """The official metrics: JointRecall@gt@q_T plus Recall@gt@q_s of every stage.

    Returns:
      ``[JointRecall(gt_num, quotas), StageRecall(gt_num, quotas[s], stage=s), ...]`` named
      ``joint_recall_at_{gt}_at_{q_T}`` and ``{stage_name}_recall_at_{gt}_at_{q_s}``.
    """
    out: list[keras.metrics.Metric] = [JointRecall(k=gt_num, quotas=quotas)]
    for s, (name, q) in enumerate(zip(stage_names, quotas)):
        out.append(StageRecall(k=gt_num, m=q, stage=s, name=f"{name}_recall_at_{gt_num}_at_{q}"))
    return out


# Embedding gradients arrive as IndexedSlices. For tables up to this many elements they are
# densified before the optimizer: the compiled (XLA) sparse Adam update is several times
# slower than the dense one at these sizes (benchmarks/RESULTS.md §5), and a dense update is
# also what the official PyTorch code does (nn.Embedding gives dense gradients).
DENSE_GRADIENT_MAX_ELEMENTS = 1 << 22


def _densify(grad: tf.Tensor | tf.IndexedSlices, var: tf.Variable) -> tf.Tensor | tf.IndexedSlices:
    if isinstance(grad, tf.IndexedSlices):
        size = var.shape.num_elements()
        if size is not None and size <= DENSE_GRADIENT_MAX_ELEMENTS:
            return tf.convert_to_tensor(grad)
    return grad


class CascadeModel(tfrs.Model):
    """A cascade of stage models (retrieval -> ... -> ranking) trained as one network.

    ``call(batch)`` stacks the scores of every stage; ``compute_loss`` feeds them to a
    :class:`LcronTask` (``LcronLoss`` by default; any loss with the cascade-loss contract
    plugs in through ``task=LcronTask(loss=...)``). One optimizer, one ``model.fit``.

    Batches are dicts in the canonical format (:mod:`lcron_tf.schema`); the loss
    reads ``batch[label_key]`` float ``[B, N]``, ``batch[mask_key]`` float 0/1 ``[B, N]``
    (optional: without it, label < 0 marks padding) and, if present,
    ``batch[sample_weight_key]`` float ``[B]``. Pad every batch to the same ``N`` so XLA
    compiles once.

    Training under XLA and ``tf.distribute``:

    * ``compile(..., jit_compile=True)`` without a strategy (or with one replica)
      compiles the whole train step with XLA, as Keras does.
    * Under a multi-replica strategy (``MirroredStrategy``, ``MultiWorkerMirroredStrategy``)
      Keras' whole-step XLA fails (mirrored variables on other devices), so the model
      instead compiles the per-replica forward pass + loss with
      ``tf.function(jit_compile=True)``; metric updates, the gradient all-reduce and the
      optimizer step run outside XLA.
    * The loss is ``sum_b w_b loss_b / GLOBAL_batch_size`` (``tf.nn.compute_average_loss``)
      and regularisation losses are scaled by ``1 / num_replicas``, so loss and gradients
      do not depend on the replica count. ``train_step``/``test_step`` all-reduce the
      reported ``loss`` and use ``distribute_reduction_method = "first"``, so the logged
      loss is the global-batch loss and metrics are not summed over replicas.

    Args:
      stages: Keras models (or layers) mapping the batch dict to float32 scores
        ``[batch_size, list_size]``, FIRST stage first (retrieval ... final ranking).
      quotas: serving quotas, strictly decreasing, one per stage (e.g. ``(30, 20)``).
      task: an :class:`LcronTask`; default ``LcronTask(LcronLoss(gt_num, stage_k=gt_num),
        metrics=default_metrics(...), stage_names=stage_names)``.
      stage_names: one unique name per stage (default ``("retrieval", "ranking")`` for
        two stages, ``("retrieval", "pre_ranking", "ranking")`` for three).
      gt_num: ground-truth size of the default task's loss and metrics.
      label_key, mask_key, sample_weight_key: batch keys.
      name: model name.

    Raises:
      ValueError: no stages, bad ``quotas``, ``len(stages) != len(quotas)``, bad
        ``stage_names``, or a task without the ``LcronTask`` interface.
    """

    def __init__(
        self,
        stages: Sequence[keras.layers.Layer],
        quotas: Sequence[int],
        task: LcronTask | None = None,
        stage_names: Sequence[str] | None = None,
        *,
        gt_num: int = 10,
        label_key: str = "label",
        mask_key: str = "mask",
        sample_weight_key: str = "sample_weight",
        name: str = "cascade_model",
        **kwargs: object,
    ) -> None:
        super().__init__(name=name, **kwargs)
        if isinstance(stages, keras.layers.Layer) or not isinstance(stages, Sequence) or not stages:
            raise ValueError(
                "`stages` must be a non-empty list of Keras models, first stage first. "
                f"Received: stages={stages!r}"
            )
        for i, s in enumerate(stages):
            if not callable(s):
                raise ValueError(f"`stages[{i}]` must be a callable Keras model. Received: {s!r}")
        quotas = rm.check_quotas(quotas)
        if len(quotas) != len(stages):
            raise ValueError(
                f"`quotas` must hold one quota per stage ({len(stages)} stages). "
                f"Received: quotas={quotas}"
            )
        if stage_names is None:
            stage_names = _DEFAULT_NAMES.get(len(stages)) or [
                f"stage{i}" for i in range(len(stages))
            ]
        if isinstance(stage_names, str) or len(stage_names) != len(stages):
            raise ValueError(
                f"`stage_names` must hold one name per stage ({len(stages)} stages). "
                f"Received: stage_names={stage_names!r}"
            )
        if len(set(stage_names)) != len(stage_names):
            raise ValueError(f"`stage_names` must be unique. Received: {stage_names!r}")
        gt_num = validation.check_k("gt_num", gt_num, None)
        self.stage_models = list(stages)
        self.quotas = tuple(quotas)
        self.stage_names = tuple(str(s) for s in stage_names)
        self.gt_num = gt_num
        self.label_key = label_key
        self.mask_key = mask_key
        self.sample_weight_key = sample_weight_key
        if task is None:
            task = LcronTask(
                loss=LcronLoss(gt_num=gt_num, stage_k=gt_num),
                metrics=default_metrics(self.quotas, gt_num, self.stage_names),
                stage_names=self.stage_names,
            )
        for method in ("compute", "update_metrics"):
            if not callable(getattr(task, method, None)):
                raise ValueError(
                    f"`task` must be an LcronTask (or provide `compute` and `update_metrics`). "
                    f"Received: task={task!r}"
                )
        self.task = task
        self.cascade_topk = CascadeTopK(self.quotas, name="cascade_topk")
        self._jit_per_replica = False
        self._jit_forward_loss = None
        # Logged values are made identical on every replica (see train_step), so take one.
        self.distribute_reduction_method = "first"

    # ------------------------------------------------------------------ factory

    @classmethod
    def default(
        cls,
        schema: CascadeSchema,
        num_stages: int = 2,
        *,
        quotas: Sequence[int] | None = None,
        loss: object | None = None,
        metrics: Sequence[keras.metrics.Metric] | None = None,
        emb_dim: int = 8,
        retrieval_units: Sequence[int] = (128, 64, 32),
        pre_ranker_units: Sequence[int] = (128, 64, 32),
        ranker_units: Sequence[int] = (128, 128, 32),
        attention_units: int = 80,
        history_length: int | None = None,
        name: str = "cascade_model",
    ) -> CascadeModel:
        """The paper's cascade: DSSM -> DIN (2 stages) or DSSM -> MLP -> DIN (3 stages).

        Args:
          schema: the dataset's :class:`~lcron_tf.schema.CascadeSchema`.
          num_stages: 2 or 3.
          quotas: serving quotas (default ``schema.quotas``; must have ``num_stages`` entries).
          loss: cascade loss (default ``LcronLoss(gt_num=schema.gt_num, stage_k=schema.gt_num)``).
          metrics: task metrics (default :func:`default_metrics`).
          emb_dim: embedding dimension of every tower (paper: 8).
          retrieval_units: DSSM tower sizes (paper: ``(128, 64, 32)``).
          pre_ranker_units: MLP pre-ranker hidden sizes (paper: ``(128, 64, 32)``).
          ranker_units: DIN main MLP hidden sizes (paper: ``(128, 128, 32)``).
          attention_units: DIN attention MLP size (paper: 80).
          history_length: use only the most recent items of ``history`` (default all).
          name: model name.

        Returns:
          A :class:`CascadeModel` with stage names ``retrieval[, pre_ranking], ranking``.
        """
        if num_stages not in (2, 3):
            raise ValueError(f"`num_stages` must be 2 or 3. Received: num_stages={num_stages!r}")
        quotas = tuple(schema.quotas if quotas is None else quotas)
        if len(quotas) != num_stages:
            raise ValueError(
                f"`quotas` must hold {num_stages} quotas for num_stages={num_stages} (pass "
                f"`quotas=` when schema.quotas does not match). Received: quotas={quotas}"
            )
        rm.check_quotas(quotas, schema.list_size)
        common = {"emb_dim": emb_dim, "history_length": history_length}
        stages: list[keras.Model] = [
            DssmRetrieval(schema, tower_units=retrieval_units, name="retrieval", **common)
        ]
        if num_stages == 3:
            stages.append(
                MlpPreRanker(schema, hidden_units=pre_ranker_units, name="pre_ranking", **common)
            )
        stages.append(
            DinRanker(schema, hidden_units=ranker_units, attention_units=attention_units,
                      name="ranking", **common)
        )
        names = _DEFAULT_NAMES[num_stages]
        gt = schema.gt_num
        task = LcronTask(
            loss=LcronLoss(gt_num=gt, stage_k=gt) if loss is None else loss,
            metrics=default_metrics(quotas, gt, names) if metrics is None else metrics,
            stage_names=names,
        )
        return cls(stages, quotas, task=task, stage_names=names, gt_num=gt, name=name)

    # ------------------------------------------------------------------ forward

    def call(self, batch: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """Scores of every stage.

        Args:
          batch: the canonical batch dict.
          training: Keras training flag, passed to every stage.

        Returns:
          float32 ``[batch_size, num_stages, list_size]``, first stage first.
        """
        scores = []
        for i, stage in enumerate(self.stage_models):
            s = stage(batch, training=training)
            if s.shape.rank == 3 and s.shape[-1] == 1:
                s = tf.squeeze(s, axis=-1)
            if s.shape.rank != 2:
                raise ValueError(
                    f"stage {i} ({self.stage_names[i]!r}) must return scores [batch_size, "
                    f"list_size]. Received shape {s.shape}"
                )
            scores.append(tf.cast(s, tf.float32))
        return tf.stack(scores, axis=1)

    def predict_cascade(self, batch: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Serve the hard cascade on a batch.

        Returns:
          dict with ``"scores"`` float32 ``[B, S, N]``, ``"indices"`` int32 ``[B, quotas[-1]]``
          (final selection ordered by the last stage's score, -1 = empty slot) and
          ``"survival"`` float32 0/1 ``[B, N]``.
        """
        scores = self(batch, training=False)
        indices, survival = self.cascade_topk(scores, mask=batch.get(self.mask_key))
        return {"scores": scores, "indices": indices, "survival": survival}

    # ------------------------------------------------------------------ loss

    def _targets(self, inputs: Mapping[str, tf.Tensor]) -> tuple:
        if self.label_key not in inputs:
            raise ValueError(
                f"the batch has no labels under `label_key`={self.label_key!r}. "
                f"Received keys: {sorted(inputs)}"
            )
        return (
            inputs[self.label_key],
            inputs.get(self.mask_key),
            inputs.get(self.sample_weight_key),
        )

    def _forward_and_loss(self, inputs: Mapping[str, tf.Tensor], training: bool) -> tuple:
        labels, mask, weights = self._targets(inputs)
        scores = self(inputs, training=training)
        loss, terms = self.task.compute(labels, scores, mask, weights)
        return loss, terms, scores

    def compute_loss(self, inputs: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """The task loss of a batch (the per-replica share of the global-batch mean).

        Also updates the task's metrics and loss-term metrics.

        Args:
          inputs: the canonical batch dict (with labels and mask).
          training: Keras training flag.

        Returns:
          float32 scalar.
        """
        if self._jit_per_replica:
            if self._jit_forward_loss is None:
                self._jit_forward_loss = tf.function(self._forward_and_loss, jit_compile=True)
            loss, terms, scores = self._jit_forward_loss(inputs, training)
        else:
            loss, terms, scores = self._forward_and_loss(inputs, training)
        labels, mask, weights = self._targets(inputs)
        ops = self.task.update_metrics(labels, scores, mask, weights, terms)
        with tf.control_dependencies(ops):
            return tf.identity(loss)

    def compile(self, optimizer: object = "rmsprop", **kwargs: object) -> None:
        """``keras.Model.compile``; ``jit_compile=True`` under a multi-replica strategy
        compiles the per-replica forward pass and loss instead of the whole step."""
        jit = kwargs.pop("jit_compile", None)
        self._jit_per_replica = bool(jit) and self.distribute_strategy.num_replicas_in_sync > 1
        self._jit_forward_loss = None
        super().compile(optimizer=optimizer, jit_compile=False if self._jit_per_replica else jit,
                        **kwargs)

    def _regularization_loss(self) -> tf.Tensor:
        if not self.losses:
            return tf.constant(0.0)
        return tf.nn.scale_regularization_loss(tf.add_n([tf.reduce_sum(x) for x in self.losses]))

    def _logs(self, loss: tf.Tensor, reg: tf.Tensor, total: tf.Tensor) -> dict:
        logs = {m.name: m.result() for m in self.metrics}
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            loss, reg, total = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [loss, reg, total])
        logs.update(loss=loss, regularization_loss=reg, total_loss=total)
        return logs

    def train_step(self, inputs: Mapping[str, tf.Tensor]) -> dict:
        """One optimizer step on ``compute_loss`` (TFRS's step, made replica-count invariant).

        Under the ``mixed_float16`` policy Keras wraps the optimizer in a
        ``LossScaleOptimizer``; the loss is then scaled before the float16 backward pass and
        the gradients unscaled before the update, as Keras' own ``train_step`` does (TFRS's
        step skips this, so small float16 gradients underflow to 0). The loss itself is always
        computed in float32.
        """
        scaled = isinstance(self.optimizer, keras.mixed_precision.LossScaleOptimizer)
        with tf.GradientTape() as tape:
            loss = self.compute_loss(inputs, training=True)
            reg = self._regularization_loss()
            total = loss + reg
            target = self.optimizer.get_scaled_loss(total) if scaled else total
        variables = self.trainable_variables
        grads = tape.gradient(target, variables)
        if scaled:
            grads = self.optimizer.get_unscaled_gradients(grads)
        self.optimizer.apply_gradients(
            [(_densify(g, v), v) for g, v in zip(grads, variables) if g is not None]
        )
        return self._logs(loss, reg, total)

    def test_step(self, inputs: Mapping[str, tf.Tensor]) -> dict:
        loss = self.compute_loss(inputs, training=False)
        reg = self._regularization_loss()
        return self._logs(loss, reg, loss + reg)
