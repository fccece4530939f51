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

``mode="masked"`` is the default (everywhere in lcron_tf): the true per-candidate mask.
Padded items (whatever they hold: ``-inf``, NaN) are excluded from sorting, normalisers and
means (means are over the ``n`` valid items), nothing depends on where padding sits, any
number of stages works, and the soft label matrix is used. Without padding it equals
``mode="reference"`` with the soft label matrix. Requests with ``n <= k`` (for ``L_e2e``:
``n <= min(stage_k)``, i.e. no stage has to drop anything) carry no learning signal and get
weight 0; a request with no valid candidate therefore contributes exactly 0 with zero
gradients.

In both modes the loss is finite for every input with finite scores: logs are
floored by ``eps`` (each log term is at most ``-ln(1e-6) = 13.8155``). The numeric contract
shared by every cascade loss (dtypes, padding, empty batches, bad arguments) is in
:mod:`lcron_tf.ops.contract`.

Three losses follow the contract of :mod:`lcron_tf.ops.contract` (``-> LossTerms``):
:func:`lcron_loss` (the full LCRON loss with learned per-stage weights), :func:`cascade_recall_loss`
(``L_e2e`` alone) and :func:`stage_topk_loss` (the unweighted sum of the ``L_single``).
:func:`lcron_loss_terms` is the dict-valued form with every intermediate term.

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

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from lcron_tf.ops import contract, topk, validation
from lcron_tf.ops import labels as labels_ops

LABEL_MATRIX_CHOICES = ("soft", "binary")


@dataclasses.dataclass(frozen=True)
class LcronTermsOptions(contract.LossOptions):
    """Options of the LCRON terms (``L_e2e``, ``L_single``), validated once.

    Attributes:
      gt_num: size of the ground-truth set (the top ``gt_num`` by label).
      stage_k: int, or one int per stage: the ``k`` of each stage's relaxed top-k (the
        official code uses 10 = gt_num everywhere, not the serving quotas).
      tau: temperature of the relaxed sort (>= ``validation.MIN_TAU``; paper: 50).
      sort: ``"neural"`` (NeuralSort) or ``"soft"`` (SoftSort).
      mode: ``"masked"`` (default) or ``"reference"`` (see the module docstring).
      label_matrix: ``"soft"``, ``"binary"`` or ``None`` = soft, except reference mode with
        3+ stages, which uses binary as the official three-stage code.
      impl: ``"auto"``, ``"dense"`` or ``"lean"`` (see :func:`lcron_tf.ops.topk.resolve_impl`).
      eps: epsilon of the normalisers and logs (1e-6 as in the official code).
    """

    gt_num: int = 10
    stage_k: int | tuple[int, ...] = 10
    tau: float = 50.0
    sort: str = "neural"
    mode: str = validation.DEFAULT_MODE
    label_matrix: str | None = None
    impl: str = "auto"
    eps: float = dataclasses.field(default=topk.EPS, kw_only=True)

    def validate(self) -> None:
        self._set("gt_num", validation.check_k("gt_num", self.gt_num, None))
        k = self.stage_k
        if isinstance(k, Sequence) and not isinstance(k, str):
            self._set("stage_k", tuple(validation.per_stage_ks(list(k), len(k), None)))
        else:
            self._set("stage_k", validation.per_stage_ks(k, 1, None)[0])
        self._set("tau", validation.check_tau("tau", self.tau))
        validation.check_choice("sort", self.sort, validation.SORT_CHOICES)
        validation.check_choice("mode", self.mode, validation.MODE_CHOICES)
        if self.label_matrix is not None:
            validation.check_choice("label_matrix", self.label_matrix, LABEL_MATRIX_CHOICES)
        validation.check_choice("impl", self.impl, validation.IMPL_CHOICES)
        self._set("eps", validation.check_positive("eps", self.eps))

    @classmethod
    def schema_defaults(
        cls, schema: Any, quotas: Sequence[int] | None, overrides: Mapping[str, Any]
    ) -> dict[str, Any]:
        """``gt_num = schema.gt_num`` and ``stage_k = gt_num`` (the paper: every k = |GT|)."""
        gt = overrides.get("gt_num", None if schema is None else int(schema.gt_num))
        return {} if gt is None else {"gt_num": gt, "stage_k": gt}


@dataclasses.dataclass(frozen=True)
class LcronOptions(contract.WeightingOptions, LcronTermsOptions):
    """Options of the full LCRON loss: :class:`LcronTermsOptions` plus the learned weights."""

    def validate(self) -> None:
        super().validate()
        self._validate_weighting()


def _terms(prepared: contract.Prepared, opts: LcronTermsOptions) -> dict:
    """Every LCRON term of prepared inputs (see :func:`lcron_loss_terms`)."""
    logits, labels, mask, _, dtype = prepared
    list_size = labels.shape[1]
    ks = validation.per_stage_ks(opts.stage_k, len(logits), list_size)
    gt_num = validation.check_k("gt_num", opts.gt_num, list_size)
    label_matrix = opts.label_matrix
    if label_matrix is None:
        label_matrix = "binary" if (opts.mode == "reference" and len(logits) >= 3) else "soft"
    binarize = label_matrix == "binary"
    eps = opts.eps
    masks = contract.mode_masks(mask, opts.mode, prepared.valid)
    count, item_mask = masks.count, masks.item_mask

    # Label mass in the first gt_num rows (y) and in rows gt_num .. count-1 (z).
    groups = labels_ops.tie_groups(labels, masks.group_mask)
    y = labels_ops.label_row_mass(
        labels, 0, tf.minimum(count, gt_num), masks.group_mask, binarize, groups=groups
    )
    z = labels_ops.label_row_mass(
        labels, gt_num, count, masks.group_mask, binarize, groups=groups
    )
    y = y * item_mask
    z = z * item_mask

    ups, downs = [], []
    for x, k in zip(logits, ks):
        up, down = topk.normalized_up_down(
            x, k, tau=opts.tau, sort=opts.sort, row_limit=count, col_mask=item_mask,
            sort_mask=masks.sort_mask, eps=eps, impl=opts.impl,
        )
        ups.append(up)
        downs.append(down)

    def mean_over_items(v: tf.Tensor) -> tf.Tensor:  # [B, N] -> [B]
        return tf.math.divide_no_nan(tf.reduce_sum(v, axis=1), masks.denom)

    prod_up = tf.reduce_prod(tf.stack(ups), axis=0)
    prod_keep = tf.reduce_prod(1.0 - tf.stack(downs), axis=0)
    # 1 - prod_keep >= 0 always; the maximum() is a no-op in value but stops XLA from
    # re-associating (1 - p) + eps into (1 + eps) - p, which in float32 turns eps = 1e-6
    # into 9.54e-7 and shifts every padded column's constant by 0.047.
    lost = tf.maximum(1.0 - prod_keep, 0.0)
    e2e_items = -y * tf.math.log(prod_up + eps) - tf.clip_by_value(1.0 - y, 0.0, 1.0) * tf.math.log(
        lost + eps
    )
    if opts.mode == "masked":
        e2e_items = e2e_items * item_mask
    e2e_per_request = mean_over_items(e2e_items)
    if opts.mode == "masked":
        e2e_per_request = e2e_per_request * tf.cast(count > min(ks), dtype)

    single_per_request = []
    for up, down, k in zip(ups, downs, ks):
        items = item_mask * (-y * tf.math.log(up + eps) - z * tf.math.log(down + eps))
        single_per_request.append(mean_over_items(items) * tf.cast(count > k, dtype))
    return {
        "e2e_per_request": e2e_per_request,
        "single_per_request": single_per_request,
        "up": ups,
        "down": downs,
    }


def lcron_loss_terms(
    stage_logits: Sequence[tf.Tensor],
    labels: tf.Tensor,
    mask: tf.Tensor,
    gt_num: int = 10,
    stage_k: int | Sequence[int] = 10,
    tau: float = 50.0,
    sort: str = "neural",
    mode: str = validation.DEFAULT_MODE,
    *,
    label_matrix: str | None = None,
    eps: float = topk.EPS,
    impl: str = "auto",
    check_numerics: bool = False,
) -> dict:
    """Compute the LCRON loss terms for a batch of requests.

    Args:
      stage_logits: list of float ``[batch_size, list_size]`` tensors, one per stage, FIRST
        stage first (retrieval ... final ranking). float16/bfloat16 compute in float32.
      labels: ``[batch_size, list_size]``, higher = better (the official code uses
        ``30 - rank_index`` for the positives and 7/6/5 for the negative groups).
      mask: 0/1 ``[batch_size, list_size]``, 1 = real candidate.
      gt_num, stage_k, tau, sort, mode, label_matrix, eps, impl, check_numerics: see
        :class:`LcronTermsOptions` (``mode`` defaults to ``"masked"``, as everywhere; pass
        ``mode="reference"`` for the official code's numbers).

    Returns:
      A dict of tensors in the compute dtype (float64 for float64 input, else float32):
        ``"e2e"``: scalar L_e2e (mean over the batch; 0 for an empty batch);
        ``"single"``: list of scalars, one L_single per stage, same order as ``stage_logits``;
        ``"total"``: scalar ``e2e + sum(0.5 * single)``;
        ``"e2e_per_request"``: ``[batch_size]``;
        ``"single_per_request"``: list of ``[batch_size]``, one per stage;
        ``"up"`` / ``"down"``: lists of ``[batch_size, list_size]``, each stage's normalised
        relaxed top-k membership and its complement (for analysis).

    Raises:
      ValueError: see :mod:`lcron_tf.ops.contract` (empty ``stage_logits``, ragged input,
        inputs not of rank 2 or of different shapes, ``gt_num``/``stage_k`` of a wrong type or
        outside ``[1, list_size]``, a ``tau`` that is not positive or overflows float32, an
        unknown ``sort``/``mode``/``label_matrix``/``impl``, mask values outside {0, 1}).
    """
    opts = LcronTermsOptions(
        gt_num=gt_num, stage_k=stage_k, tau=tau, sort=sort, mode=mode, label_matrix=label_matrix,
        impl=impl, eps=eps, check_numerics=check_numerics,
    )
    prepared = contract.prepare_inputs(
        stage_logits, labels, mask, mode=opts.mode, check_numerics=opts.check_numerics
    )
    t = _terms(prepared, opts)
    e2e = contract.batch_mean(t["e2e_per_request"])
    single = [contract.batch_mean(v) for v in t["single_per_request"]]
    return {
        "e2e": e2e,
        "single": single,
        "total": e2e + tf.add_n([0.5 * v for v in single]),
        **t,
    }


def _stage_parts(name: str, values: Sequence[tf.Tensor]) -> dict[str, tf.Tensor]:
    return {contract.stage_part(name, s): v for s, v in enumerate(values)}


def lcron_loss(
    stage_logits: Sequence[tf.Tensor],
    labels: tf.Tensor,
    mask: tf.Tensor,
    *,
    options: LcronOptions | None = None,
    log_sigma: tf.Tensor | None = None,
    **overrides: Any,
) -> contract.LossTerms:
    """LCRON: ``L_e2e + sum_s 0.5 / sigma_s**2 * L_single_s + ln(prod_s sigma_s)`` per request.

    Args:
      stage_logits, labels, mask: see :mod:`lcron_tf.ops.contract`.
      options: :class:`LcronOptions` (``learn_weights``/``init_sigma`` are read by the
        Keras wrapper, which owns the ``sigma`` variables).
      log_sigma: float ``[num_stages]``, ``ln sigma_s`` (``None``: every ``sigma = 1``).
      **overrides: options by keyword.

    Returns:
      :class:`~lcron_tf.ops.contract.LossTerms`: ``per_request`` ``[batch_size]``; parts
      ``"e2e"``, ``"single/<s>"`` and ``"sigma/<s>"`` (the current ``sigma_s`` on every row).
    """
    opts = contract.resolve_options(LcronOptions, options, overrides)
    prepared = contract.prepare_inputs(
        stage_logits, labels, mask, mode=opts.mode, check_numerics=opts.check_numerics
    )
    t = _terms(prepared, opts)
    singles = tf.stack(t["single_per_request"], axis=1)  # [B, S]
    per_request = t["e2e_per_request"] + contract.uncertainty_weighted(singles, log_sigma)
    num_stages = len(prepared.logits)
    if log_sigma is None:
        sigma = tf.ones([num_stages], prepared.dtype)
    else:
        sigma = tf.exp(tf.cast(log_sigma, prepared.dtype))
    rows = tf.ones_like(per_request)
    parts = {"e2e": t["e2e_per_request"], **_stage_parts("single", t["single_per_request"])}
    parts.update(_stage_parts("sigma", [rows * sigma[s] for s in range(num_stages)]))
    return contract.LossTerms(per_request, parts)


def cascade_recall_loss(
    stage_logits: Sequence[tf.Tensor],
    labels: tf.Tensor,
    mask: tf.Tensor,
    *,
    options: LcronTermsOptions | None = None,
    **overrides: Any,
) -> contract.LossTerms:
    """``L_e2e`` alone (BCE on the relaxed end-to-end survival lower bound), per request.

    Returns:
      :class:`~lcron_tf.ops.contract.LossTerms` with the part ``"e2e"``.
    """
    opts = contract.resolve_options(LcronTermsOptions, options, overrides)
    prepared = contract.prepare_inputs(
        stage_logits, labels, mask, mode=opts.mode, check_numerics=opts.check_numerics
    )
    e2e = _terms(prepared, opts)["e2e_per_request"]
    return contract.LossTerms(e2e, {"e2e": e2e})


def stage_topk_loss(
    stage_logits: Sequence[tf.Tensor],
    labels: tf.Tensor,
    mask: tf.Tensor,
    *,
    options: LcronTermsOptions | None = None,
    **overrides: Any,
) -> contract.LossTerms:
    """``sum_s L_single_s``: each stage's own relaxed top-k BCE, unweighted, per request.

    With a single stage this is LCRON's ``L_single`` (and, with ``stage_k = m``, ARF-v2's
    ``L_relax``).

    Returns:
      :class:`~lcron_tf.ops.contract.LossTerms` with the parts ``"single/<s>"``.
    """
    opts = contract.resolve_options(LcronTermsOptions, options, overrides)
    prepared = contract.prepare_inputs(
        stage_logits, labels, mask, mode=opts.mode, check_numerics=opts.check_numerics
    )
    singles = _terms(prepared, opts)["single_per_request"]
    return contract.LossTerms(tf.add_n(singles), _stage_parts("single", singles))


LCRON = contract.LossSpec(
    "lcron", lcron_loss, LcronOptions, ("e2e", "single/*", "sigma/*"), weighted=True
)
CASCADE_RECALL = contract.LossSpec(
    "cascade_recall", cascade_recall_loss, LcronTermsOptions, ("e2e",)
)
STAGE_TOPK = contract.LossSpec("stage_topk", stage_topk_loss, LcronTermsOptions, ("single/*",))

__all__ = [
    "CASCADE_RECALL",
    "LABEL_MATRIX_CHOICES",
    "LCRON",
    "STAGE_TOPK",
    "LcronOptions",
    "LcronTermsOptions",
    "cascade_recall_loss",
    "lcron_loss",
    "lcron_loss_terms",
    "stage_topk_loss",
]
