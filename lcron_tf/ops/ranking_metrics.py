"""The official LCRON evaluation metrics and the relaxed cascade survival (pure TF, XLA-safe).

Definitions (lcron_method.md §1; ``B`` = batch_size, ``N`` = list_size, ``S`` = num_stages):

* **Hard ranking** (order, top-q, hard cascade, ground truth ``GT_k``): one definition,
  :mod:`lcron_tf.ops.ranking` (stable, ties to the lower index, padding last); its names
  are re-exported here.
* **Joint recall** (Recall@k@q_T, paper Eq. 2) = ``|survivors of the last stage ∩ GT_k| / k``.
* **Stage recall** Recall@k@m = ``|top-m(scores) ∩ GT_k| / k``, over all valid candidates
  (not the cascaded subset). The denominator is always ``k`` (as the official code),
  also when a request has fewer than ``k`` valid candidates.
* **NDCG@k** is sklearn's ``ndcg_score(y_true, y_score, k=k)`` (``ignore_ties=False``)
  per request: gains are the raw label values (linear), discount ``1 / log2(rank + 2)``
  for 0-based ranks ``< k`` and 0 beyond, and the DCG is *tie-averaged*: candidates with
  equal scores form one group occupying ranks ``a .. a+c-1``; each gets the group's mean
  gain times the sum of the discounts of those ranks. IDCG is the DCG of the labels
  sorted descending; NDCG = 0 where IDCG = 0. ``masked=False`` is the official
  evaluation (every slot, padded ones included with their scores and labels; negative
  labels count as gain 0); ``masked=True`` gives padded slots gain 0 and ranks them
  after every valid candidate.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from lcron_tf.ops import contract, masking, sorting, topk, validation
from lcron_tf.ops.ranking import (  # noqa: F401  (re-exported: the one hard ranking)
    _as_float,
    _as_mask,
    _check_stages,
    cascade_topk,
    check_quotas,
    descending_order,
    descending_ranks,
    ground_truth_mask,
    hard_cascade,
    topk_mask,
)

#: The modes of :func:`relaxed_cascade_survival` (the one switch, ``validation.MODE_CHOICES``).
RELAXED_MODES = validation.MODE_CHOICES


# ------------------------------------------------------------------------------------------
# Metrics, one value per request.
# ------------------------------------------------------------------------------------------


def joint_recall(
    stage_scores: Sequence[tf.Tensor],
    labels: tf.Tensor,
    mask: tf.Tensor | None,
    k: int,
    quotas: Sequence[int],
) -> tf.Tensor:
    """Recall@k@q_T through the hard cascade: ``|survivors ∩ GT_k| / k`` per request.

    Args:
      stage_scores: list of ``S`` float ``[batch_size, list_size]``, first stage first.
      labels: float ``[batch_size, list_size]``.
      mask: optional bool or 0/1 ``[batch_size, list_size]``.
      k: size of the ground-truth set, ``1 <= k <= list_size``.
      quotas: ``S`` strictly decreasing serving quotas (e.g. ``(30, 20)``).

    Returns:
      float32 ``[batch_size]`` in ``[0, 1]``.
    """
    labels = _as_float(labels, "labels")
    k = validation.check_k("k", k, labels.shape[1])
    survivors = hard_cascade(stage_scores, quotas, mask)[-1]
    gt = ground_truth_mask(labels, k, mask)
    return tf.reduce_sum(gt * survivors, axis=1) / float(k)


def stage_recall(
    scores: tf.Tensor, labels: tf.Tensor, mask: tf.Tensor | None, k: int, m: int
) -> tf.Tensor:
    """Recall@k@m of one stage over all valid candidates: ``|top-m(scores) ∩ GT_k| / k``.

    Args:
      scores: float ``[batch_size, list_size]``.
      labels: float ``[batch_size, list_size]``.
      mask: optional bool or 0/1 ``[batch_size, list_size]``.
      k: GT size, ``1 <= k <= list_size``.
      m: number of candidates the stage keeps, ``1 <= m <= list_size``.

    Returns:
      float32 ``[batch_size]`` in ``[0, 1]``.
    """
    scores = _as_float(scores, "scores")
    labels = _as_float(labels, "labels")
    validation.check_same_shape("scores", scores, "labels", labels)
    k = validation.check_k("k", k, labels.shape[1])
    m = validation.check_k("m", m, labels.shape[1])
    kept = topk_mask(scores, m, mask)
    gt = ground_truth_mask(labels, k, mask)
    return tf.reduce_sum(gt * kept, axis=1) / float(k)


def _discounts(n: int | tf.Tensor, k: int, dtype: tf.DType) -> tf.Tensor:
    """``[n]``: ``1 / log2(r + 2)`` for ``r < k``, else 0."""
    r = tf.cast(tf.range(n), dtype)
    disc = tf.math.log(tf.constant(2.0, dtype)) / tf.math.log(r + 2.0)
    return tf.where(r < float(k), disc, tf.zeros_like(disc))


def tie_averaged_dcg(scores: tf.Tensor, gains: tf.Tensor, k: int) -> tf.Tensor:
    """sklearn's tie-averaged DCG@k (``_tie_averaged_dcg``), per request.

    A candidate whose score ties with ``c - 1`` others, with ``a`` candidates scored
    strictly higher, contributes ``gain * (D[a + c] - D[a]) / c``, where ``D[x]`` is the
    sum of the first ``x`` discounts (discount ``1 / log2(r + 2)`` for ranks ``r < k``,
    0 beyond). Summed over a tie group this is the group's mean gain times the sum of
    the discounts of the ranks it occupies.

    Args:
      scores: float ``[batch_size, list_size]``; NaN counts as ``-inf``.
      gains: float ``[batch_size, list_size]``.
      k: cut-off, ``k >= 1``.

    Returns:
      ``[batch_size]`` in the dtype of ``scores``.
    """
    scores = _as_float(scores, "scores")
    gains = tf.cast(_as_float(gains, "gains"), scores.dtype)
    k = validation.check_k("k", k, None)
    dtype = scores.dtype
    n = scores.shape[1] if scores.shape[1] is not None else tf.shape(scores)[1]
    scores = tf.where(tf.math.is_nan(scores), tf.constant(-float("inf"), dtype), scores)
    ascending = tf.sort(scores, axis=1)
    left = tf.searchsorted(ascending, scores, side="left")  # count of scores < s_i
    right = tf.searchsorted(ascending, scores, side="right")  # count of scores <= s_i
    higher = n - right  # a_i: strictly higher scores
    ties = right - left  # c_i >= 1
    cum = tf.concat([tf.zeros([1], dtype), tf.cumsum(_discounts(n, k, dtype))], axis=0)  # [N+1]
    span = tf.gather(cum, higher + ties) - tf.gather(cum, higher)  # [B, N]
    return tf.reduce_sum(gains * span / tf.cast(ties, dtype), axis=1)


def ndcg(
    scores: tf.Tensor,
    labels: tf.Tensor,
    k: int,
    mask: tf.Tensor | None = None,
    *,
    masked: bool = False,
) -> tf.Tensor:
    """NDCG@k with linear gains and tie-averaged DCG (sklearn ``ndcg_score``), per request.

    Args:
      scores: float ``[batch_size, list_size]``.
      labels: float ``[batch_size, list_size]``; the gains (negative values count as 0).
      k: cut-off, ``1 <= k <= list_size``.
      mask: optional bool or 0/1 ``[batch_size, list_size]``; only used with ``masked=True``.
      masked: ``False`` = the official evaluation (all slots as given); ``True`` = padded
        slots get gain 0 and rank after every valid candidate (valid scores must be finite).

    Returns:
      float32/float64 ``[batch_size]`` in ``[0, 1]``; 0 for requests whose IDCG is 0.
    """
    scores = _as_float(scores, "scores")
    labels = tf.cast(_as_float(labels, "labels"), scores.dtype)
    validation.check_same_shape("scores", scores, "labels", labels)
    k = validation.check_k("k", k, labels.shape[1])
    gains = tf.maximum(labels, tf.zeros_like(labels))
    if masked:
        valid = _as_mask(mask, scores)
        gains = tf.where(valid, gains, tf.zeros_like(gains))
        scores = tf.where(valid, scores, tf.constant(-float("inf"), scores.dtype))
    dcg = tie_averaged_dcg(scores, gains, k)
    kk = min(k, labels.shape[1]) if labels.shape[1] is not None else k
    ideal = tf.math.top_k(gains, k=kk, sorted=True).values  # [B, k]
    idcg = tf.reduce_sum(ideal * _discounts(kk, k, scores.dtype)[None, :], axis=1)
    return tf.where(idcg > 0, tf.math.divide_no_nan(dcg, idcg), tf.zeros_like(dcg))


# ------------------------------------------------------------------------------------------
# Relaxed (differentiable) cascade survival.
# ------------------------------------------------------------------------------------------


def relaxed_cascade_survival(
    stage_scores: Sequence[tf.Tensor],
    ks: Sequence[int],
    mask: tf.Tensor | None = None,
    *,
    tau: float = 50.0,
    sort: str = "neural",
    mode: str = validation.DEFAULT_MODE,
    normalize: bool = True,
) -> tf.Tensor:
    """Relaxed probability that each candidate survives the whole cascade.

    ``survival_i = prod_s P^{k_s}_s[i]``, the lower bound of LCRON (paper Eq. 7-8) where
    ``P^{k_s}_s`` is stage ``s``'s relaxed top-``k_s`` membership. With ``normalize=True``
    it is divided by the detached column sum of the relaxed permutation matrix (Eq. 10),
    exactly the ``up`` of :func:`lcron_tf.ops.normalized_up_down` that LCRON's ``L_e2e``
    multiplies, so the values are in ``[0, 1]``; with ``normalize=False`` it is the raw
    sum of the first ``k_s`` rows (NeuralSort columns do not sum to 1, so values can
    exceed 1 slightly).

    Args:
      stage_scores: list of ``S`` float ``[batch_size, list_size]``, first stage first.
      ks: ``S`` ints in ``[1, list_size]``: each stage's ``k`` (e.g. the serving quotas, or
        LCRON's training ``k``). Need not be decreasing.
      mask: optional bool or 0/1 ``[batch_size, list_size]``.
      tau: temperature > 0 of the relaxed sort (LCRON: 50).
      sort: ``"neural"`` (NeuralSort) or ``"soft"`` (SoftSort).
      mode: ``"masked"``: padded candidates are left out of the sort and get 0;
        ``"reference"``: as the official code, every slot is sorted and a prefix mask of
        the first ``sum(mask)`` slots is applied afterwards.
      normalize: divide by the detached column sums (LCRON Eq. 10).

    Returns:
      ``[batch_size, list_size]`` in the dtype of the scores, 0 for padded candidates.

    Raises:
      ValueError: a ``k`` outside ``[1, list_size]``, ``len(ks) != len(stage_scores)``,
        ``tau <= 0``, an unknown ``sort`` or ``mode``.
    """
    scores = _check_stages(stage_scores)
    if isinstance(ks, int) or len(ks) != len(scores):
        raise ValueError(
            f"`ks` must hold one int per stage ({len(scores)} stages). Received: ks={ks!r}"
        )
    list_size = scores[0].shape[1]
    ks = [validation.check_k(f"ks[{i}]", k, list_size) for i, k in enumerate(ks)]
    tau = validation.check_tau("tau", tau)
    validation.check_choice("sort", sort, validation.SORT_CHOICES)
    dtype = scores[0].dtype
    valid = _as_mask(mask, scores[0], "stage_scores[0]")
    if mode == "masked":
        scores = [masking.where_valid(s, valid) for s in scores]
    masks = contract.mode_masks(tf.cast(valid, dtype), mode, valid)
    count, col_mask, sort_mask = masks.count, masks.item_mask, masks.sort_mask
    survival = col_mask
    for s, k in zip(scores, ks):
        s = tf.cast(s, dtype)
        if normalize:
            member, _ = topk.normalized_up_down(
                s, k, tau=tau, sort=sort, row_limit=count, col_mask=col_mask,
                sort_mask=sort_mask,
            )
        elif sort == "neural":
            member = topk.neural_sort_topk_membership(s, tau, k, sort_mask)
        else:
            member = topk.relaxed_topk_membership(sorting.soft_sort(s, tau, sort_mask), k)
        survival = survival * member
    return survival * col_mask
