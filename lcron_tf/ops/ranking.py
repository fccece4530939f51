"""Hard ranking, declared once (pure TF, XLA-safe): order, ranks, top-k and the hard cascade.

**Deterministic order.** Every hard ranking of lcron_tf (the evaluation metrics, the
inference cascade, the hard top-k sets of RankFlow and the ranks of LambdaLoss) sorts the
*valid* candidates (``mask == 1``) by score, descending; equal scores are broken by the
**lower candidate index first** (a stable sort); padded candidates (``mask == 0``) come after
every valid one, whatever their score (no sentinel value is involved, so huge or infinite
scores cannot tie with padding). NaN scores count as ``-inf``. The official evaluation breaks
ties at random (it shuffles the columns of each batch once); this rule is its deterministic
counterpart, identical whenever scores are distinct.

* **Top-q.** ``top-q(scores)`` = the first ``min(q, n_valid)`` candidates of that order:
  padded candidates are never selected, and a request with fewer valid candidates than
  ``q`` selects only its valid ones.
* **Hard cascade.** Stage 1 keeps ``top-q_1`` of the valid candidates by its scores;
  stage ``s`` keeps ``top-q_s`` *of the survivors of stage s-1* by its own scores.
* **Ground truth.** ``GT_k = top-k`` of the valid candidates by label (the same order with
  labels as scores: label desc, then index asc), i.e. the official "top-k of label * mask"
  with deterministic ties.

``B`` = batch_size, ``N`` = list_size, ``S`` = num_stages.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from lcron_tf.ops import masking, validation


def _as_float(x: tf.Tensor, name: str) -> tf.Tensor:
    x = tf.convert_to_tensor(x)
    validation.check_rank2(name, x)
    return x if x.dtype.is_floating else tf.cast(x, tf.float32)


def _as_mask(mask: tf.Tensor | None, like: tf.Tensor, name: str = "scores") -> tf.Tensor:
    """Bool ``[B, N]``; all True when ``mask`` is None."""
    if mask is None:
        return tf.ones_like(like, dtype=tf.bool)
    mask = tf.convert_to_tensor(mask)
    validation.check_rank2("mask", mask)
    validation.check_same_shape(name, like, "mask", mask)
    return masking.valid_mask(mask)


def check_quotas(quotas: Sequence[int], list_size: int | None = None) -> tuple[int, ...]:
    """Return ``quotas`` as a tuple of ints after checking them.

    Raises:
      ValueError: empty, a non-int or value < 1, not strictly decreasing, or
        ``quotas[0] > list_size`` (when ``list_size`` is known).
    """
    if isinstance(quotas, int) or not isinstance(quotas, Sequence) or len(quotas) == 0:
        raise ValueError(
            "`quotas` must be a non-empty sequence of ints, one per stage, first stage first "
            f"(e.g. (30, 20)). Received: quotas={quotas!r}"
        )
    out = tuple(validation.check_k(f"quotas[{i}]", q, None) for i, q in enumerate(quotas))
    if any(a <= b for a, b in zip(out, out[1:])):
        raise ValueError(
            f"`quotas` must be strictly decreasing (each stage keeps fewer candidates). "
            f"Received: quotas={out}"
        )
    if list_size is not None and out[0] > list_size:
        raise ValueError(
            f"`quotas` must be <= list_size (the number of candidates N={list_size}). "
            f"Received: quotas={out}"
        )
    return out


def _check_stages(stage_scores: Sequence[tf.Tensor]) -> list[tf.Tensor]:
    if isinstance(stage_scores, tf.Tensor) or not isinstance(stage_scores, Sequence):
        raise ValueError(
            "`stage_scores` must be a list of [batch_size, list_size] tensors, first stage "
            f"first. Received: {type(stage_scores).__name__}"
        )
    if len(stage_scores) == 0:
        raise ValueError("`stage_scores` must contain at least one stage. Received: []")
    scores = [_as_float(s, f"stage_scores[{i}]") for i, s in enumerate(stage_scores)]
    for i, s in enumerate(scores[1:], start=1):
        validation.check_same_shape("stage_scores[0]", scores[0], f"stage_scores[{i}]", s)
    return scores


# ------------------------------------------------------------------------------------------
# Deterministic hard ranking.
# ------------------------------------------------------------------------------------------


def descending_order(scores: tf.Tensor, mask: tf.Tensor | None = None) -> tf.Tensor:
    """The deterministic descending order of every request (see the module docstring).

    Args:
      scores: float ``[batch_size, list_size]``.
      mask: optional bool or 0/1 ``[batch_size, list_size]``; 0 = padded slot.

    Returns:
      int32 ``[batch_size, list_size]``: ``order[b, r]`` is the index of the candidate at
      0-based position ``r``. Valid candidates first (score desc, index asc), then padded
      candidates (index asc).
    """
    scores = _as_float(scores, "scores")
    valid = _as_mask(mask, scores)
    n = scores.shape[1] if scores.shape[1] is not None else tf.shape(scores)[1]
    clean = tf.where(tf.math.is_nan(scores), tf.constant(-float("inf"), scores.dtype), scores)
    # top_k is stable: equal values keep the lower index first (also under XLA).
    by_score = tf.math.top_k(clean, k=n, sorted=True).indices  # [B, N]
    # Second stable pass on validity moves padded slots last, keeping the score order.
    valid_in_order = tf.gather(tf.cast(valid, tf.int32), by_score, batch_dims=1)
    by_valid = tf.math.top_k(valid_in_order, k=n, sorted=True).indices
    return tf.gather(by_score, by_valid, batch_dims=1)


def descending_ranks(scores: tf.Tensor, mask: tf.Tensor | None = None) -> tf.Tensor:
    """0-based position of every candidate in :func:`descending_order`.

    Args:
      scores: float ``[batch_size, list_size]``.
      mask: optional bool or 0/1 ``[batch_size, list_size]``.

    Returns:
      int32 ``[batch_size, list_size]``, a permutation of ``0 .. N-1`` per request.
    """
    order = descending_order(scores, mask)
    n = order.shape[1] if order.shape[1] is not None else tf.shape(order)[1]
    # Inverse permutation: the ascending order of `order` (values are distinct).
    return tf.math.top_k(-order, k=n, sorted=True).indices


def topk_mask(
    scores: tf.Tensor, k: int, mask: tf.Tensor | None = None, dtype: tf.DType = tf.float32
) -> tf.Tensor:
    """Hard top-k membership with the deterministic tie rule; padded slots never selected.

    Args:
      scores: float ``[batch_size, list_size]``.
      k: int ``>= 1`` (``k > n_valid`` selects every valid candidate).
      mask: optional bool or 0/1 ``[batch_size, list_size]``.
      dtype: dtype of the result.

    Returns:
      0/1 ``[batch_size, list_size]`` in ``dtype`` with ``min(k, n_valid)`` ones per request
      (no gradient).
    """
    k = validation.check_k("k", k, None)
    scores = tf.stop_gradient(_as_float(scores, "scores"))
    valid = _as_mask(mask, scores)
    ranks = descending_ranks(scores, valid)
    return tf.cast(tf.logical_and(ranks < k, valid), dtype)


def hard_cascade(
    stage_scores: Sequence[tf.Tensor], quotas: Sequence[int], mask: tf.Tensor | None = None
) -> list[tf.Tensor]:
    """Survivors of each stage of the hard cascade (top-q1 by stage 1, then top-q2 of those...).

    Args:
      stage_scores: list of ``S`` float ``[batch_size, list_size]`` tensors, first stage first.
      quotas: ``S`` strictly decreasing ints, ``quotas[0] <= list_size``.
      mask: optional bool or 0/1 ``[batch_size, list_size]``.

    Returns:
      list of ``S`` float32 0/1 ``[batch_size, list_size]`` masks; entry ``s`` marks the
      candidates that survive stages ``0..s`` (``min(q_s, n_valid)`` ones per request).

    Raises:
      ValueError: bad ``quotas``, or ``len(stage_scores) != len(quotas)``.
    """
    scores = _check_stages(stage_scores)
    quotas = check_quotas(quotas, scores[0].shape[1])
    if len(scores) != len(quotas):
        raise ValueError(
            f"the number of stages ({len(scores)}) must equal the number of `quotas` "
            f"({len(quotas)}). Received: quotas={quotas}"
        )
    alive = _as_mask(mask, scores[0], "stage_scores[0]")
    out = []
    for s, q in zip(scores, quotas):
        kept = topk_mask(s, q, alive)
        alive = kept > 0
        out.append(kept)
    return out


def cascade_topk(
    stage_scores: Sequence[tf.Tensor], quotas: Sequence[int], mask: tf.Tensor | None = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """The final selection of the hard cascade.

    Args:
      stage_scores: list of ``S`` float ``[batch_size, list_size]``, first stage first.
      quotas: ``S`` strictly decreasing ints, ``quotas[0] <= list_size``.
      mask: optional bool or 0/1 ``[batch_size, list_size]``.

    Returns:
      ``(indices, survival)``:
        ``indices`` int32 ``[batch_size, quotas[-1]]``: the selected candidates ordered by
        the last stage's score (desc, ties by index); ``-1`` fills the slots of requests
        with fewer than ``quotas[-1]`` selectable candidates.
        ``survival`` float32 0/1 ``[batch_size, list_size]``: 1 for the selected candidates.
    """
    survivors = hard_cascade(stage_scores, quotas, mask)[-1]
    last = _as_float(stage_scores[-1], "stage_scores[-1]")
    q = int(quotas[-1])
    order = descending_order(last, survivors > 0)[:, :q]
    picked = tf.gather(survivors, order, batch_dims=1) > 0
    indices = tf.where(picked, order, -tf.ones_like(order))
    return indices, survivors


def ground_truth_mask(labels: tf.Tensor, k: int, mask: tf.Tensor | None = None) -> tf.Tensor:
    """``GT_k``: the top-k valid candidates by label (label desc, ties by lower index).

    Args:
      labels: float ``[batch_size, list_size]``, higher = better.
      k: int ``>= 1``.
      mask: optional bool or 0/1 ``[batch_size, list_size]``.

    Returns:
      float32 0/1 ``[batch_size, list_size]``.
    """
    return topk_mask(labels, k, mask)


__all__ = [
    "cascade_topk",
    "check_quotas",
    "descending_order",
    "descending_ranks",
    "ground_truth_mask",
    "hard_cascade",
    "topk_mask",
]
