"""Hard cascade selection and the official LCRON evaluation metrics (pure TF, XLA-safe).

Definitions (lcron_method.md §1; ``B`` = batch_size, ``N`` = list_size, ``S`` = num_stages):

* **Deterministic order.** Every hard ranking in this module sorts the *valid*
  candidates (``mask == 1``) by score, descending; equal scores are broken by the
  **lower candidate index first** (a stable sort); padded candidates (``mask == 0``)
  come after every valid one, whatever their score. NaN scores count as ``-inf``.
  The official evaluation breaks ties at random (it shuffles the columns of each batch
  once); this rule is its deterministic counterpart, identical whenever scores are
  distinct. Shuffle the candidate columns yourself if you want random tie-breaking.
* **Top-q.** ``top-q(scores)`` = the first ``min(q, n_valid)`` candidates of that order:
  padded candidates are never selected, and a request with fewer valid candidates than
  ``q`` selects only its valid ones.
* **Hard cascade.** Stage 1 keeps ``top-q_1`` of the valid candidates by its scores;
  stage ``s`` keeps ``top-q_s`` *of the survivors of stage s-1* by its own scores.
* **Ground truth.** ``GT_k = top-k`` of the valid candidates by label (the same order
  with labels as scores: label desc, then index asc), i.e. the official
  "top-k of label * mask" with deterministic ties.
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

from lcron_tf.ops import sorting, topk, validation

RELAXED_MODES = ("masked", "reference")


# ------------------------------------------------------------------------------------------
# Input checks (trace time, static shapes only).
# ------------------------------------------------------------------------------------------


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
    return mask if mask.dtype == tf.bool else tf.not_equal(mask, tf.zeros_like(mask))


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


def topk_mask(scores: tf.Tensor, k: int, mask: tf.Tensor | None = None) -> tf.Tensor:
    """Hard top-k membership with the deterministic tie rule; padded slots never selected.

    Args:
      scores: float ``[batch_size, list_size]``.
      k: int ``>= 1`` (``k > n_valid`` selects every valid candidate).
      mask: optional bool or 0/1 ``[batch_size, list_size]``.

    Returns:
      float32 0/1 ``[batch_size, list_size]`` with ``min(k, n_valid)`` ones per request.
    """
    k = validation.check_k("k", k, None)
    scores = _as_float(scores, "scores")
    valid = _as_mask(mask, scores)
    ranks = descending_ranks(scores, valid)
    return tf.cast(tf.logical_and(ranks < k, valid), tf.float32)


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


# ------------------------------------------------------------------------------------------
# Metrics, one value per request.
# ------------------------------------------------------------------------------------------


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
    mode: str = "masked",
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
    tau = validation.check_positive("tau", tau)
    validation.check_choice("sort", sort, validation.SORT_CHOICES)
    validation.check_choice("mode", mode, RELAXED_MODES)
    dtype = scores[0].dtype
    valid = tf.cast(_as_mask(mask, scores[0], "stage_scores[0]"), dtype)
    count = tf.reduce_sum(valid, axis=1)  # [B]
    if mode == "reference":
        positions = tf.cast(tf.range(tf.shape(valid)[1]), dtype)[None, :]
        col_mask = tf.cast(positions < count[:, None], dtype)  # prefix mask
        sort_mask = None
    else:
        col_mask = valid
        sort_mask = valid
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
