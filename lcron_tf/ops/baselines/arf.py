"""ARF and ARF-v2 baselines (Wang et al. 2024, Adaptive Neural Ranking Framework; pure TF)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from lcron_tf.ops import contract, sorting, topk, validation
from lcron_tf.ops import labels as labels_ops
from lcron_tf.ops.baselines import common


def permutation_cross_entropy(
    perm: tf.Tensor, label_perm: tf.Tensor, eps: float = topk.EPS
) -> tf.Tensor:
    """ARF's ``L_global`` numerator: ``sum_{r,i} -Lab[r, i] ln(P[r, i] + eps)`` per request.

    Args:
      perm: float ``[batch_size, list_size, list_size]`` relaxed permutation matrix of the
        scores (``[b, row, item]``, e.g. :func:`lcron_tf.ops.neural_sort` with a mask).
      label_perm: same shape, the label permutation matrix
        (:func:`lcron_tf.ops.label_permutation_matrix`, soft as the official ARF code).
      eps: added inside the log (official 1e-6).

    Returns:
      ``[batch_size]``, dtype of ``perm``. Divide by ``n_valid**2`` for the official mean
      over rows and items.
    """
    label_perm = tf.stop_gradient(tf.cast(label_perm, perm.dtype))
    return tf.reduce_sum(-label_perm * tf.math.log(perm + eps), axis=[1, 2])


def relaxed_topk_mean_nll(
    perm: tf.Tensor, targets: tf.Tensor, m: int, mask: tf.Tensor, eps: float = topk.EPS
) -> tf.Tensor:
    """First-version ARF ``L_relax`` numerator: ``sum_i m_i y_i (-ln(mean_{r<m} P[r, i] + eps))``.

    The official code averages (not sums) the first ``m`` rows; the log of a mean differs
    from the log of the sum by the constant ``ln m`` (up to ``eps``), so the gradients are
    those of the relaxed top-``m`` membership.

    Args:
      perm: float ``[batch_size, list_size, list_size]``.
      targets: float ``[batch_size, list_size]`` (the ground-truth mass ``y``).
      m: number of rows (the stage's quota), ``1 <= m <= list_size``.
      mask: 0/1 ``[batch_size, list_size]``.
      eps: added inside the log.

    Returns:
      ``[batch_size]``, dtype of ``perm``.
    """
    m = validation.check_k("m", m, perm.shape[1])
    membership = topk.relaxed_topk_membership(perm, m) / float(m)
    weights = tf.cast(mask, perm.dtype) * tf.cast(targets, perm.dtype)
    return tf.reduce_sum(-weights * tf.math.log(membership + eps), axis=1)


@dataclasses.dataclass(frozen=True)
class ArfOptions(contract.WeightingOptions, common.BaselineOptions):
    """Options of :func:`arf_loss` and :func:`arf_v2_loss`.

    Attributes:
      quotas: serving quotas, first stage first = each stage's ``m`` (official: 30/20 and
        40/30/20; default: RecFlow's).
      gt_num: size of the ground truth (official ``top_k = 10``).
      tau: NeuralSort temperature. Default 200, the value hard-coded in the official code
        (its ``--tau`` flag is ignored); the paper searches {1, 20, 50, 100, 200, 1000}.
      learn_weights, init_sigma: the learned ``sigma_s`` of ``L_global`` (official
        ``global_weight``, one per stage, init 1).
    """

    quotas: tuple[int, ...] | None = None
    tau: float = 200.0

    def validate(self) -> None:
        super().validate()
        self._set("tau", validation.check_tau("tau", self.tau))
        self._validate_weighting()


def _arf(
    stage_logits: Sequence[tf.Tensor],
    labels: tf.Tensor,
    mask: tf.Tensor,
    opts: ArfOptions,
    log_sigma: tf.Tensor | None,
    v2: bool,
) -> contract.LossTerms:
    logits, labels, mask, valid, dtype = common.prepare(stage_logits, labels, mask, opts)
    name = "ARF-v2" if v2 else "ARF"
    quotas = common.resolve_quotas(opts.quotas, len(logits), labels.shape[1], name)
    n = tf.reduce_sum(mask, axis=1)
    y = common.ground_truth_mass(labels, valid, opts.gt_num)
    label_perm = labels_ops.label_permutation_matrix(labels, valid)
    relax, glob = [], []
    for x, m in zip(logits, quotas):
        perm = sorting.neural_sort(x, opts.tau, valid)
        ce = permutation_cross_entropy(perm, label_perm)
        glob.append(tf.math.divide_no_nan(ce, n * n))
        gate = tf.cast(n > m, dtype)
        if v2:  # LCRON's L_single at m rows
            z = labels_ops.label_row_mass(labels, opts.gt_num, n, valid)
            up, down = topk.normalized_up_down(
                x, m, tau=opts.tau, sort="neural", row_limit=n, col_mask=mask, sort_mask=valid
            )
            items = mask * (-y * tf.math.log(up + topk.EPS) - z * tf.math.log(down + topk.EPS))
            nll = tf.reduce_sum(items, axis=1)
        else:
            nll = relaxed_topk_mean_nll(perm, y, m, mask)
        relax.append(tf.math.divide_no_nan(nll, n) * gate)
    weighted = contract.uncertainty_weighted(tf.stack(glob, axis=1), log_sigma)
    per_request = tf.add_n(relax) + weighted
    num_stages = len(logits)
    sigma = (
        tf.ones([num_stages], dtype) if log_sigma is None else tf.exp(tf.cast(log_sigma, dtype))
    )
    rows = tf.ones_like(per_request)
    parts = {**common.stage_parts("relax", relax), **common.stage_parts("global", glob)}
    parts.update(common.stage_parts("sigma", [rows * sigma[s] for s in range(num_stages)]))
    return contract.LossTerms(per_request, parts)


def arf_loss(
    stage_logits: Sequence[tf.Tensor],
    labels: tf.Tensor,
    mask: tf.Tensor,
    *,
    options: ArfOptions | None = None,
    log_sigma: tf.Tensor | None = None,
    **overrides: Any,
) -> contract.LossTerms:
    """ARF per request, each stage's terms summed.

    For stage ``s`` with quota ``m = quotas[s]``, ``P`` = NeuralSort of its scores over the
    valid items (temperature ``tau``), ``Lab`` the soft label permutation matrix and ``y`` the
    ground-truth mass (first ``gt_num`` label rows)::

      L_global_s = sum_{r,i} -Lab[r, i] ln(P[r, i] + eps) / n**2
      L_relax_s  = sum_i -y_i ln(mean_{r<m} P[r, i] + eps) / n * 1[n > m]
      L          = sum_s L_relax_s + sum_s 0.5 / sigma_s**2 * L_global_s + ln prod_s sigma_s

    Differences from the official code (equal on unpadded lists): padded items are excluded
    from the sort (the code sorts them and masks with a prefix mask), means are over the
    ``n`` valid items (code: ``N``), and ``L_global`` is not restricted to full lists (code:
    gated by ``count >= N``).

    Args:
      log_sigma: float ``[num_stages]``, ``ln sigma_s`` (``None``: every ``sigma = 1``).

    Returns:
      :class:`~lcron_tf.ops.contract.LossTerms` with the parts ``"relax/<s>"``,
      ``"global/<s>"`` and ``"sigma/<s>"``.
    """
    opts = contract.resolve_options(ArfOptions, options, overrides)
    return _arf(stage_logits, labels, mask, opts, log_sigma, v2=False)


def arf_v2_loss(
    stage_logits: Sequence[tf.Tensor],
    labels: tf.Tensor,
    mask: tf.Tensor,
    *,
    options: ArfOptions | None = None,
    log_sigma: tf.Tensor | None = None,
    **overrides: Any,
) -> contract.LossTerms:
    """ARF-v2: ARF with ``L_relax`` replaced by LCRON's ``L_single`` at ``m`` rows.

    ``L_relax_s = sum_i [-y_i ln(up_i + eps) - z_i ln(down_i + eps)] / n * 1[n > m]`` with
    ``up``/``down`` the detached-normalised mass of rows ``< m`` / ``>= m``
    (:func:`lcron_tf.ops.normalized_up_down`, ``k = m``), ``y``/``z`` the label mass of rows
    ``< gt_num`` / ``>= gt_num``. With ``m = gt_num`` this is exactly LCRON's ``L_single``.
    Everything else is as :func:`arf_loss`.
    """
    opts = contract.resolve_options(ArfOptions, options, overrides)
    return _arf(stage_logits, labels, mask, opts, log_sigma, v2=True)


_ARF_PARTS = ("relax/*", "global/*", "sigma/*")
ARF = contract.LossSpec("arf", arf_loss, ArfOptions, _ARF_PARTS, weighted=True)
ARF_V2 = contract.LossSpec("arf_v2", arf_v2_loss, ArfOptions, _ARF_PARTS, weighted=True)

__all__ = [
    "ARF",
    "ARF_V2",
    "ArfOptions",
    "arf_loss",
    "arf_v2_loss",
    "permutation_cross_entropy",
    "relaxed_topk_mean_nll",
]
