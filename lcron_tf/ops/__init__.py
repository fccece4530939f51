"""Pure TensorFlow math of lcron_tf (no Keras): sorting, top-k, labels, ranking, every loss.

* :mod:`~lcron_tf.ops.contract` - the one contract of every cascade loss (``LossTerms``,
  options dataclasses, input preparation and the padding/dtype rules);
* :mod:`~lcron_tf.ops.lcron` - LCRON (:func:`lcron_loss_terms` and the contract functions);
* :mod:`~lcron_tf.ops.baselines` - the seven baselines of the paper, one module each;
* :mod:`~lcron_tf.ops.sorting`, :mod:`~lcron_tf.ops.topk`, :mod:`~lcron_tf.ops.lean`,
  :mod:`~lcron_tf.ops.labels` - relaxed sorts, relaxed top-k, label matrices;
* :mod:`~lcron_tf.ops.ranking` - the one hard ranking; :mod:`~lcron_tf.ops.ranking_metrics` -
  the official metrics; :mod:`~lcron_tf.ops.masking` - the padding rules.
"""

from lcron_tf.ops.contract import LossOptions, LossSpec, LossTerms
from lcron_tf.ops.labels import label_permutation_matrix, label_row_mass, tie_groups
from lcron_tf.ops.lcron import (
    cascade_recall_loss,
    lcron_loss,
    lcron_loss_terms,
    stage_topk_loss,
)
from lcron_tf.ops.sorting import abs_diff_row_sums, neural_sort, relaxed_sort, soft_sort
from lcron_tf.ops.topk import (
    EPS,
    neural_sort_topk_membership,
    normalized_up_down,
    relaxed_topk_membership,
)

__all__ = [
    "EPS",
    "LossOptions",
    "LossSpec",
    "LossTerms",
    "abs_diff_row_sums",
    "cascade_recall_loss",
    "label_permutation_matrix",
    "label_row_mass",
    "lcron_loss",
    "lcron_loss_terms",
    "neural_sort",
    "neural_sort_topk_membership",
    "normalized_up_down",
    "relaxed_sort",
    "relaxed_topk_membership",
    "soft_sort",
    "stage_topk_loss",
    "tie_groups",
]
