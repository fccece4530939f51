"""Pure TensorFlow math of lcron_tf (no Keras): sorting, top-k, labels, LCRON terms."""

from lcron_tf.ops.cascade import lcron_loss_terms
from lcron_tf.ops.labels import label_permutation_matrix, label_row_mass, tie_groups
from lcron_tf.ops.sorting import abs_diff_row_sums, neural_sort, relaxed_sort, soft_sort
from lcron_tf.ops.topk import (
    EPS,
    neural_sort_topk_membership,
    normalized_up_down,
    relaxed_topk_membership,
)

__all__ = [
    "EPS",
    "abs_diff_row_sums",
    "label_permutation_matrix",
    "label_row_mass",
    "lcron_loss_terms",
    "neural_sort",
    "neural_sort_topk_membership",
    "normalized_up_down",
    "relaxed_sort",
    "relaxed_topk_membership",
    "soft_sort",
    "tie_groups",
]
