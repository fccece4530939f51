"""Every cascade loss function of lcron_tf.ops with small-list options, for contract tests."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from lcron_tf.ops import baselines, lcron

N = 12  # list size of the test requests
MIN_VALID = 8  # every test request keeps at least this many real candidates
QUOTAS = (6, 4)

# name -> (function, options, weighted)
CASES = {
    "lcron": (lcron.lcron_loss, dict(gt_num=3, stage_k=3, tau=2.0), True),
    "lcron_lean": (lcron.lcron_loss, dict(gt_num=3, stage_k=[4, 3], tau=2.0, impl="lean"), True),
    "lcron_soft": (lcron.lcron_loss, dict(gt_num=3, stage_k=3, tau=2.0, sort="soft"), True),
    "lcron_soft_lean": (
        lcron.lcron_loss, dict(gt_num=3, stage_k=3, tau=2.0, sort="soft", impl="lean"), True
    ),
    "cascade_recall": (lcron.cascade_recall_loss, dict(gt_num=3, stage_k=3, tau=2.0), False),
    "stage_topk": (lcron.stage_topk_loss, dict(gt_num=3, stage_k=3, tau=2.0), False),
    "bce": (baselines.bce_loss, dict(gt_num=3), False),
    "bce_tiers": (baselines.bce_loss, dict(gt_num=3, train_tiers=[None, 2]), False),
    "icc": (baselines.icc_loss, dict(quotas=QUOTAS, sigma=0.5), False),
    "icc_official": (
        baselines.icc_loss, dict(quotas=QUOTAS, sigma=0.5, kappa="official", pairs="index_order"),
        False,
    ),
    "rankflow": (baselines.rankflow_loss, dict(quotas=QUOTAS, gt_num=3, rank_weight=1.0), False),
    "fs_ranknet": (baselines.fs_ranknet_loss, dict(gt_num=3), False),
    "fs_ranknet_labels": (baselines.fs_ranknet_loss, dict(gt_num=3, groups="labels"), False),
    "fs_lambdaloss": (baselines.fs_lambdaloss_loss, dict(quotas=QUOTAS), False),
    "arf": (baselines.arf_loss, dict(quotas=QUOTAS, gt_num=3, tau=5.0), True),
    "arf_v2": (baselines.arf_v2_loss, dict(quotas=QUOTAS, gt_num=3, tau=5.0), True),
}

LOG_SIGMA = (0.2, -0.3)


def call(name: str, logits, labels, mask, dtype=tf.float32, **extra):
    """``per_request`` of loss ``name`` (weighted losses get a fixed ``log_sigma``)."""
    fn, options, weighted = CASES[name]
    kwargs = {**options, **extra}
    if weighted:
        kwargs["log_sigma"] = tf.constant(LOG_SIGMA, dtype)
    return fn(logits, labels, mask, **kwargs)


def requests(rng: np.random.Generator, b: int, n: int = N, min_valid: int = MIN_VALID):
    """Two stages of scores, tied integer labels and random padding (>= min_valid real)."""
    logits = [rng.normal(scale=2.0, size=(b, n)).astype(np.float32) for _ in range(2)]
    labels = rng.integers(0, 6, size=(b, n)).astype(np.float32)
    mask = np.ones((b, n), np.float32)
    for r in range(b):
        pad = int(rng.integers(0, n - min_valid + 1))
        mask[r, rng.choice(n, pad, replace=False)] = 0.0
    return logits, labels, mask


def poison(rng: np.random.Generator, logits, labels, mask):
    """Copies whose padded slots hold +-inf / NaN scores and NaN / inf labels."""
    bad_scores = np.array([np.inf, -np.inf, np.nan], np.float32)
    bad_labels = np.array([np.nan, np.inf, -np.inf], np.float32)
    pad = mask == 0
    out = []
    for x in logits:
        y = x.copy()
        y[pad] = rng.choice(bad_scores, size=int(pad.sum()))
        out.append(y)
    lab = labels.copy()
    lab[pad] = rng.choice(bad_labels, size=int(pad.sum()))
    return out, lab
