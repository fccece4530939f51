"""LCRON together with the TFRS tasks (``Retrieval``, ``Ranking``) in one ``compute_loss``.

A TFRS multitask model (the official multitask tutorial) trains a retrieval task
(in-batch softmax over (query, positive) pairs, ``FactorizedTopK`` evaluation) and a
rating task (``Ranking`` with MSE) on interactions. To add LCRON without losing them, feed
the model cascade requests (:func:`lcron_tf.data.build_candidates`) and derive the
per-interaction pairs from the requests' positive block: :func:`positive_pairs` and
:class:`CascadeMultiTask` do that, on one scale.

**Scales.** ``LcronTask`` returns the MEAN over requests (of the global batch).
``tfrs.tasks.Retrieval`` returns, with its default loss (``CategoricalCrossentropy(
reduction=SUM)``), the SUM over the batch's pairs of ``-log softmax``: about
``M * ln(M)`` for ``M`` pairs at initialisation (1,420 for ``M = 256``), so added as it is
it outweighs LCRON by three orders of magnitude and its gradient is the only one that
counts (with Adagrad/SGD even more than with Adam), and it changes with the batch size.
``tfrs.tasks.Ranking`` with ``MeanSquaredError()`` already returns a mean (over pairs).
:class:`CascadeMultiTask` divides the retrieval sum by the global number of pairs so that
the three parts are per-example means, then returns ``sum_k weights[k] * part_k`` and logs
every part (unweighted) as a metric (``<name>_lcron``, ``<name>_retrieval``,
``<name>_ranking``), so the scales are visible in ``fit``'s History.

**XLA and FactorizedTopK.** ``FactorizedTopK`` streams the candidate corpus through
tf.data, which XLA cannot compile, and ``StringLookup`` towers cannot be compiled either.
Compile the model WITHOUT ``jit_compile`` and give the LCRON task ``jit_compile=True``:
the LCRON loss and its metrics run under XLA, the towers and the TFRS tasks stay in the
TF graph, and ``model.evaluate`` computes ``FactorizedTopK`` as usual. Retrieval metrics
are only computed outside training (``compute_metrics=not training``, as FactorizedTopK
over the corpus every training step is slow).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import tensorflow as tf

from lcron_tf._keras import keras
from lcron_tf.models.task import LcronTask

__all__ = ["CascadeMultiTask", "positive_pairs"]

PARTS = ("lcron", "retrieval", "ranking")


def positive_pairs(
    query_embeddings: tf.Tensor,
    candidate_embeddings: tf.Tensor,
    mask: tf.Tensor,
    positives: slice,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """The (query, positive candidate) pairs of a batch of cascade requests.

    Args:
      query_embeddings: float ``[B, D]``.
      candidate_embeddings: float ``[B, N, D]``.
      mask: 0/1 ``[B, N]`` (1 = real candidate).
      positives: the positive block of the candidate axis (``CandidateLists.slots[
        "positive"]``, ``slice(0, P)``).

    Returns:
      ``(queries [B*P, D], candidates [B*P, D], weights float32 [B*P], score_mask bool
      [B*P, B*P])``: pair ``i = b * P + p`` is request ``b``'s ``p``-th positive; weight 0 for
      padded positive slots; ``score_mask`` (for ``tfrs.tasks.Retrieval(score_mask=)``)
      removes padded slots and the request's OTHER positives from every row's softmax
      (they are positives of the same query, not negatives).
    """
    cand = candidate_embeddings[:, positives]
    p = cand.shape[1]
    if p is None or p == 0:
        raise ValueError(f"`positives` must select a non-empty static block. Received {positives}")
    d = cand.shape[-1]
    q = tf.repeat(query_embeddings, p, axis=0)  # [B*P, D]
    c = tf.reshape(cand, [-1, d if d is not None else tf.shape(cand)[-1]])
    w = tf.reshape(tf.cast(mask[:, positives], tf.float32), [-1])
    req = tf.repeat(tf.range(tf.shape(query_embeddings)[0]), p)
    same_request = tf.equal(req[:, None], req[None, :])
    diagonal = tf.eye(tf.shape(req)[0], dtype=tf.bool)
    score_mask = tf.logical_and(tf.logical_or(~same_request, diagonal), w[None, :] > 0)
    return q, c, w, score_mask


class CascadeMultiTask(keras.layers.Layer):
    """``LcronTask`` + ``tfrs.tasks.Retrieval`` + ``tfrs.tasks.Ranking``, on one scale.

    Call it from ``compute_loss`` with the stage scores of the cascade requests and,
    for the TFRS tasks, the tower outputs::

        self.task = CascadeMultiTask(
            LcronTask(..., jit_compile=True), retrieval=tfrs.tasks.Retrieval(metrics=...),
            ranking=tfrs.tasks.Ranking(loss=MSE, metrics=[RMSE]), positives=slice(0, 10))
        ...
        return self.task(batch["label"], [retrieval_scores, ranking_scores], batch["mask"],
                         query_embeddings=user_emb, candidate_embeddings=movie_emb,
                         relevance=batch["relevance"], relevance_predictions=rating_pred,
                         training=training)

    Args:
      lcron: the :class:`LcronTask`.
      retrieval: optional ``tfrs.tasks.Retrieval`` (its loss reduced with ``SUM`` - the
        default - or ``NONE``; the result is made a per-pair mean over the global batch).
      ranking: optional ``tfrs.tasks.Ranking`` fed ``(relevance, predictions)`` of the
        positive pairs, weighted by the mask.
      weights: ``{"lcron", "retrieval", "ranking"}`` -> float (missing = 1.0).
      positives: the positive block of the candidate axis.
      mask_same_request: pass :func:`positive_pairs`' ``score_mask`` to the retrieval task.
      name: layer name (prefix of the part metrics).
    """

    def __init__(
        self,
        lcron: LcronTask,
        retrieval: keras.layers.Layer | None = None,
        ranking: keras.layers.Layer | None = None,
        weights: Mapping[str, float] | None = None,
        positives: slice = slice(0, 10),
        mask_same_request: bool = True,
        name: str = "multitask",
        **kwargs: object,
    ) -> None:
        super().__init__(name=name, **kwargs)
        unknown = sorted(set(weights or {}) - set(PARTS))
        if unknown:
            raise ValueError(f"`weights` keys must be among {PARTS}. Received: {unknown}")
        if not isinstance(positives, slice):
            raise ValueError(f"`positives` must be a slice. Received: {positives!r}")
        if retrieval is not None:
            reduction = getattr(getattr(retrieval, "_loss", None), "reduction", "sum")
            if str(reduction) not in ("sum", "none"):
                raise ValueError(
                    "the retrieval task's loss must use reduction SUM (TFRS's default) or NONE; "
                    f"got {reduction!r}"
                )
        self.lcron = lcron
        self.retrieval = retrieval
        self.ranking = ranking
        self.part_weights = {k: float((weights or {}).get(k, 1.0)) for k in PARTS}
        self.positives = positives
        self.mask_same_request = bool(mask_same_request)
        used = [k for k, t in zip(PARTS, (lcron, retrieval, ranking)) if t is not None]
        self.part_metrics = {k: keras.metrics.Mean(name=f"{name}_{k}") for k in used}

    def call(
        self,
        labels: tf.Tensor,
        stage_scores: tf.Tensor | Sequence[tf.Tensor],
        mask: tf.Tensor,
        *,
        query_embeddings: tf.Tensor | None = None,
        candidate_embeddings: tf.Tensor | None = None,
        relevance: tf.Tensor | None = None,
        relevance_predictions: tf.Tensor | None = None,
        sample_weight: tf.Tensor | None = None,
        training: bool = False,
    ) -> tf.Tensor:
        """The weighted sum of the parts (float32 scalar, per-replica share of the mean).

        Args:
          labels, stage_scores, mask, sample_weight: as :meth:`LcronTask.call`
            (``[B, N]``, ``[B, S, N]`` or a list of ``[B, N]``, ``[B, N]``, ``[B]``).
          query_embeddings: float ``[B, D]`` (retrieval task).
          candidate_embeddings: float ``[B, N, D]`` (retrieval task).
          relevance: float ``[B, N]`` raw relevance (ranking task; only the positive block
            is read).
          relevance_predictions: float ``[B, N]`` or ``[B, N, 1]`` (ranking task).
          training: the Keras flag; retrieval metrics are computed only when False.
        """
        parts = {"lcron": self.lcron(labels, stage_scores, mask, sample_weight=sample_weight,
                                     training=training)}
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if self.retrieval is not None:
            if query_embeddings is None or candidate_embeddings is None:
                raise ValueError("the retrieval task needs query_embeddings and "
                                 "candidate_embeddings")
            q, c, w, score_mask = positive_pairs(
                query_embeddings, candidate_embeddings, mask, self.positives
            )
            per = self.retrieval(
                q, c, sample_weight=w, compute_metrics=not training,
                score_mask=score_mask if self.mask_same_request else None,
            )
            count = tf.cast(tf.shape(q)[0] * replicas, tf.float32)
            parts["retrieval"] = tf.reduce_sum(per) / count
        if self.ranking is not None:
            if relevance is None or relevance_predictions is None:
                raise ValueError("the ranking task needs relevance and relevance_predictions")
            pred = relevance_predictions
            if pred.shape.rank == 3:
                pred = tf.squeeze(pred, -1)
            y = tf.reshape(tf.cast(relevance[:, self.positives], tf.float32), [-1, 1])
            p = tf.reshape(tf.cast(pred[:, self.positives], tf.float32), [-1, 1])
            w = tf.reshape(tf.cast(mask[:, self.positives], tf.float32), [-1])
            parts["ranking"] = self.ranking(labels=y, predictions=p, sample_weight=w,
                                            training=training)
        ops = [self.part_metrics[k].update_state(v * tf.cast(replicas, v.dtype))
               for k, v in parts.items()]
        total = tf.add_n([self.part_weights[k] * tf.cast(v, tf.float32) for k, v in parts.items()])
        with tf.control_dependencies(ops):
            return tf.identity(total)
