"""Inputs and cases shared by the Keras 3 tests and the Keras 2 reference process."""

import numpy as np

N = 12
LOSS_CASES = {
    "lcron": ("lcron", dict(gt_num=3, stage_k=3, tau=2.0)),
    "lcron_reference": ("lcron", dict(gt_num=3, stage_k=3, tau=2.0, mode="reference")),
    "bce": ("bce", dict(gt_num=3)),
    "icc": ("icc", dict(quotas=(6, 4), sigma=0.5)),
    "rankflow": ("rankflow", dict(quotas=(6, 4), gt_num=3)),
    "fs_ranknet": ("fs_ranknet", dict(gt_num=3)),
    "fs_lambdaloss": ("fs_lambdaloss", dict(quotas=(6, 4))),
    "arf": ("arf", dict(quotas=(6, 4), gt_num=3, tau=5.0)),
    "arf_v2": ("arf_v2", dict(quotas=(6, 4), gt_num=3, tau=5.0)),
}
METRIC_CASES = {
    "joint": ("JointRecall", dict(k=3, quotas=(6, 4))),
    "stage": ("StageRecall", dict(k=3, m=6, stage=0)),
    "ndcg": ("NDCG", dict(k=5, stage=1)),
}


def inputs(b: int = 6):
    rng = np.random.default_rng(0)
    logits = [rng.normal(size=(b, N)).astype(np.float32) for _ in range(2)]
    labels = rng.integers(0, 6, size=(b, N)).astype(np.float32)
    mask = np.ones((b, N), np.float32)
    mask[1, -3:] = 0
    mask[4, :2] = 0
    return logits, labels, mask
