"""The seven baselines of the LCRON paper as pure TF loss functions (lcron_method.md §5).

One module per method, each with its options dataclass, its loss function (the contract of
:mod:`lcron_tf.ops.contract`: ``(stage_logits, labels, mask, *, options) -> LossTerms``) and
its :class:`~lcron_tf.ops.contract.LossSpec`; shared math in :mod:`.common`:

* :mod:`.bce` - BCE; :mod:`.icc` - ICC; :mod:`.rankflow` - RankFlow;
  :mod:`.fs_ranknet` - FS-RankNet; :mod:`.fs_lambdaloss` - FS-LambdaLoss;
  :mod:`.arf` - ARF and ARF-v2.

Common conventions ("masked" semantics): nothing depends on candidate positions (the
official code hard-codes segments; here the ground truth is the ``gt_num`` best labels and
"stage groups" are label tiers, which on RecFlow-shaped labels are exactly the official
groups); padded candidates never enter a sort, a top-k set, a pair or a mean and get zero
gradient; means are over the valid candidates (equal to the official means over ``N`` on
unpadded lists); the serving quotas default to RecFlow's ``(30, 20)`` / ``(40, 30, 20)``.
Where the official code deviates from the paper, the paper's form is the default and the
code's form an option.
"""

from lcron_tf.ops.baselines.arf import (
    ARF,
    ARF_V2,
    ArfOptions,
    arf_loss,
    arf_v2_loss,
    permutation_cross_entropy,
    relaxed_topk_mean_nll,
)
from lcron_tf.ops.baselines.bce import BCE, BceOptions, bce_loss
from lcron_tf.ops.baselines.common import (
    RECFLOW_QUOTAS,
    BaselineOptions,
    greater_pairs,
    ground_truth_mass,
    group_pair_weights,
    hard_ranks,
    masked_sigmoid_bce,
    pair_mask,
    pair_relations,
    pairwise_logistic,
    tier_index,
    tier_labels,
)
from lcron_tf.ops.baselines.fs_lambdaloss import (
    FS_LAMBDALOSS,
    FsLambdaOptions,
    fs_lambdaloss_loss,
    lambda_pair_weights,
)
from lcron_tf.ops.baselines.fs_ranknet import FS_RANKNET, FsRankNetOptions, fs_ranknet_loss
from lcron_tf.ops.baselines.icc import (
    ICC,
    IccOptions,
    icc_fused_score,
    icc_loss,
    kth_largest,
    soft_indicator,
)
from lcron_tf.ops.baselines.rankflow import RANKFLOW, RankFlowOptions, rankflow_loss
from lcron_tf.ops.ranking import topk_mask

#: The baselines in the paper's table order.
SPECS = (BCE, ICC, RANKFLOW, FS_RANKNET, FS_LAMBDALOSS, ARF, ARF_V2)

__all__ = [
    "ARF",
    "ARF_V2",
    "BCE",
    "FS_LAMBDALOSS",
    "FS_RANKNET",
    "ICC",
    "RANKFLOW",
    "RECFLOW_QUOTAS",
    "SPECS",
    "ArfOptions",
    "BaselineOptions",
    "BceOptions",
    "FsLambdaOptions",
    "FsRankNetOptions",
    "IccOptions",
    "RankFlowOptions",
    "arf_loss",
    "arf_v2_loss",
    "bce_loss",
    "fs_lambdaloss_loss",
    "fs_ranknet_loss",
    "greater_pairs",
    "ground_truth_mass",
    "group_pair_weights",
    "hard_ranks",
    "icc_fused_score",
    "icc_loss",
    "kth_largest",
    "lambda_pair_weights",
    "masked_sigmoid_bce",
    "pair_mask",
    "pair_relations",
    "pairwise_logistic",
    "permutation_cross_entropy",
    "rankflow_loss",
    "relaxed_topk_mean_nll",
    "soft_indicator",
    "tier_index",
    "tier_labels",
    "topk_mask",
]
