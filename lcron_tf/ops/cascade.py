"""The LCRON loss terms, L_e2e and L_single, as pure TF functions.

Two modes:

``mode="reference"`` reproduces the official kwai/LCRON PyTorch code (forward value
and gradients, float32 precision), quirks included (lcron_method.md §3.2 and §9):

* the mask is a *prefix* mask built from the candidate count ``n = sum(mask)``
  (``m_i = 1[i < n]``), not the per-candidate mask; padded items are included in the
  sort and only masked afterwards;
* normalisers are the detached column sums plus ``eps = 1e-6``; ``eps`` is also added
  inside every log; the "down" terms come from the rows ``>= k``;
* sums over items are means over the full list size ``N``, then over the batch;
* ``L_single`` is gated by ``n > k``; ``L_e2e`` is not gated, and each padded column
  adds the constant ``ln(1e6) / N`` to it (no gradient);
* the label matrix is the soft one with 2 stages and the binarised one with 3+ stages
  (override with ``label_matrix``).

``mode="masked"`` is the clean default for users: the true per-candidate mask. Padded
items are excluded from sorting, normalisers and means (means are over the ``n``
valid items), nothing depends on where padding sits, any number of stages works, and
the soft label matrix is used. Without padding it equals ``mode="reference"`` with the
soft label matrix. Requests with ``n <= k`` (for ``L_e2e``: ``n <= min(stage_k)``, i.e. no
stage has to drop anything) carry no learning signal and get weight 0; a request with
no valid candidate therefore contributes exactly 0 with zero gradients.

In both modes the loss is finite for every input with finite scores: logs are
floored by ``eps`` (each log term is at most ``-ln(1e-6) = 13.8155``).

Formulas (per request, stage ``s`` with its ``k_s``; ``y``/``z`` = label mass in rows
``< gt_num`` / ``>= gt_num``)::

  L_e2e    = 1/N sum_i [ -y_i ln(prod_s up_s,i + eps)
                         - clip(1 - y_i, 0, 1) ln(1 - prod_s (1 - down_s,i) + eps) ]
  L_single = 1/N sum_i m_i [ -y_i ln(up_s,i + eps) - z_i ln(down_s,i + eps) ] * 1[n > k_s]
  total    = L_e2e + sum_s 0.5 * L_single_s          (all uncertainty weights sigma = 1)

References:
  Wang et al. "Learning Cascade Ranking as One Network", ICML 2025, arXiv 2503.09492.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from lcron_tf.ops import labels as labels_ops
from lcron_tf.ops import topk, validation

LABEL_MATRIX_CHOICES = ("soft", "binary")


def _check_inputs(
    stage_logits: Sequence[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
) -> tuple[list[tf.Tensor], tf.Tensor, tf.Tensor, tf.DType]:
    if isinstance(stage_logits, tf.Tensor) or not isinstance(stage_logits, Sequence):
        raise ValueError(
            "`stage_logits` must be a list of [batch_size, list_size] tensors, first stage "
            f"first. Received: {type(stage_logits).__name__}"
        )
    if len(stage_logits) == 0:
        raise ValueError("`stage_logits` must contain at least one stage. Received: []")
    logits = [tf.convert_to_tensor(x) for x in stage_logits]
    dtype = validation.float_dtype(logits[0])
    labels = tf.convert_to_tensor(labels)
    mask = tf.convert_to_tensor(mask)
    validation.check_rank2("labels", labels)
    validation.check_rank2("mask", mask)
    validation.check_same_shape("labels", labels, "mask", mask)
    for i, x in enumerate(logits):
        validation.check_rank2(f"stage_logits[{i}]", x)
        validation.check_same_shape(f"stage_logits[{i}]", x, "labels", labels)
    logits = [tf.cast(x, dtype) for x in logits]
    return logits, tf.cast(labels, dtype), tf.cast(mask, dtype), dtype


def lcron_loss_terms(
    stage_logits: Sequence[tf.Tensor],
    labels: tf.Tensor,
    mask: tf.Tensor,
    gt_num: int = 10,
    stage_k: int | Sequence[int] = 10,
    tau: float = 50.0,
    sort: str = "neural",
    mode: str = "reference",
    *,
    label_matrix: str | None = None,
    eps: float = topk.EPS,
    impl: str = "auto",
) -> dict:
    """Compute the LCRON loss terms for a batch of requests.

    Args:
      stage_logits: list of float32/float64 ``[batch_size, list_size]`` tensors, one per
        stage, FIRST stage first (retrieval ... final ranking).
      labels: ``[batch_size, list_size]``, higher = better (the official code uses
        ``30 - rank_index`` for the positives and 7/6/5 for the negative groups).
      mask: 0/1 ``[batch_size, list_size]``, 1 = real candidate.
      gt_num: size of the ground-truth set (the top ``gt_num`` by label).
      stage_k: int, or one int per stage: the ``k`` of each stage's relaxed top-k
        (the official code uses 10 everywhere, not the serving quotas).
      tau: temperature of the relaxed sort (> 0).
      sort: ``"neural"`` (NeuralSort) or ``"soft"`` (SoftSort).
      mode: ``"reference"`` or ``"masked"`` (see the module docstring).
      label_matrix: ``"soft"`` or ``"binary"``; ``None`` = soft, except reference mode with
        3+ stages, which uses binary as the official three-stage code.
      eps: epsilon of the normalisers and logs (1e-6 as in the official code).
      impl: how each stage's relaxed top-k terms are computed (same values and gradients,
        to rounding): ``"dense"`` materialises the ``[batch_size, list_size, list_size]``
        matrix (the reference), ``"lean"`` never does (:mod:`lcron_tf.ops.lean`: NeuralSort
        by row chunks with recomputation, O(B N chunk) memory; SoftSort by exact one-sided
        scans, O(B N) memory), ``"auto"`` picks lean when the static ``list_size`` exceeds
        ``topk.LEAN_MIN_LIST_SIZE`` (see :func:`lcron_tf.ops.topk.resolve_impl`).

    Returns:
      A dict of tensors in the dtype of ``stage_logits[0]`` (float32 for non-float input):
        ``"e2e"``: scalar L_e2e (mean over the batch);
        ``"single"``: list of scalars, one L_single per stage, same order as ``stage_logits``;
        ``"total"``: scalar ``e2e + sum(0.5 * single)``;
        ``"e2e_per_request"``: ``[batch_size]``;
        ``"single_per_request"``: list of ``[batch_size]``, one per stage;
        ``"up"`` / ``"down"``: lists of ``[batch_size, list_size]``, each stage's normalised
        relaxed top-k membership and its complement (for analysis).

    Raises:
      ValueError: empty ``stage_logits``, inputs not of rank 2 or of different shapes,
        ``gt_num``/``stage_k`` outside ``[1, list_size]``, ``tau <= 0``, an unknown
        ``sort``/``mode``/``label_matrix``/``impl``.
    """
    logits, labels, mask, dtype = _check_inputs(stage_logits, labels, mask)
    list_size = labels.shape[1]
    ks = validation.per_stage_ks(stage_k, len(logits), list_size)
    gt_num = validation.check_k("gt_num", gt_num, list_size)
    tau = validation.check_positive("tau", tau)
    validation.check_choice("sort", sort, validation.SORT_CHOICES)
    validation.check_choice("mode", mode, validation.MODE_CHOICES)
    validation.check_choice("impl", impl, validation.IMPL_CHOICES)
    if label_matrix is None:
        label_matrix = "binary" if (mode == "reference" and len(logits) >= 3) else "soft"
    validation.check_choice("label_matrix", label_matrix, LABEL_MATRIX_CHOICES)
    binarize = label_matrix == "binary"

    n_items = tf.shape(labels)[1]
    count = tf.reduce_sum(mask, axis=1)  # [B]
    if mode == "reference":
        positions = tf.cast(tf.range(n_items), dtype)[None, :]
        item_mask = tf.cast(positions < count[:, None], dtype)  # prefix mask [B, N]
        group_mask = None  # labels are grouped over all N items, as NeuralSort(labels) does
        sort_mask = None  # padded items take part in the sort
        denom = tf.fill(tf.shape(count), tf.cast(n_items, dtype))  # [B]
    else:
        item_mask = mask
        group_mask = mask
        sort_mask = mask
        denom = count

    # Label mass in the first gt_num rows (y) and in rows gt_num .. count-1 (z).
    groups = labels_ops.tie_groups(labels, group_mask)
    y = labels_ops.label_row_mass(
        labels, 0, tf.minimum(count, gt_num), group_mask, binarize, groups=groups
    )
    z = labels_ops.label_row_mass(labels, gt_num, count, group_mask, binarize, groups=groups)
    y = y * item_mask
    z = z * item_mask

    ups, downs = [], []
    for x, k in zip(logits, ks):
        up, down = topk.normalized_up_down(
            x,
            k,
            tau=tau,
            sort=sort,
            row_limit=count,
            col_mask=item_mask,
            sort_mask=sort_mask,
            eps=eps,
            impl=impl,
        )
        ups.append(up)
        downs.append(down)

    def mean_over_items(v: tf.Tensor) -> tf.Tensor:  # [B, N] -> [B]
        return tf.math.divide_no_nan(tf.reduce_sum(v, axis=1), denom)

    prod_up = tf.reduce_prod(tf.stack(ups), axis=0)
    prod_keep = tf.reduce_prod(1.0 - tf.stack(downs), axis=0)
    # 1 - prod_keep >= 0 always; the maximum() is a no-op in value but stops XLA from
    # re-associating (1 - p) + eps into (1 + eps) - p, which in float32 turns eps = 1e-6
    # into 9.54e-7 and shifts every padded column's constant by 0.047.
    lost = tf.maximum(1.0 - prod_keep, 0.0)
    e2e_items = -y * tf.math.log(prod_up + eps) - tf.clip_by_value(1.0 - y, 0.0, 1.0) * tf.math.log(
        lost + eps
    )
    if mode == "masked":
        e2e_items = e2e_items * item_mask
    e2e_per_request = mean_over_items(e2e_items)
    if mode == "masked":
        e2e_per_request = e2e_per_request * tf.cast(count > min(ks), dtype)

    single_per_request = []
    for up, down, k in zip(ups, downs, ks):
        items = item_mask * (-y * tf.math.log(up + eps) - z * tf.math.log(down + eps))
        single_per_request.append(mean_over_items(items) * tf.cast(count > k, dtype))

    e2e = tf.reduce_mean(e2e_per_request)
    single = [tf.reduce_mean(v) for v in single_per_request]
    total = e2e + tf.add_n([0.5 * v for v in single])
    return {
        "e2e": e2e,
        "single": single,
        "total": total,
        "e2e_per_request": e2e_per_request,
        "single_per_request": single_per_request,
        "up": ups,
        "down": downs,
    }
