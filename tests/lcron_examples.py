"""The reference example of lcron_method.md §10 (values confirmed against kwai/LCRON)."""

from __future__ import annotations

import numpy as np


def reference_example(num_stages: int = 2) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """(stage_logits first stage first, labels, mask) for B = 2, N = 40 (2 stages) or 50 (3)."""
    n = 40 if num_stages == 2 else 50
    i = np.arange(n)[None, :]
    b = np.arange(2)[:, None]
    dssm = 3 * np.sin(0.23 * i - b)
    mid = 2 * np.sin(0.37 * i + b)
    top = [29 - j for j in range(10)]
    groups = [7, 6, 5] if num_stages == 2 else [8, 7, 6, 5]
    row = top + [g for g in groups for _ in range(10)]
    labels = np.array([row, row], np.float32)
    mask = np.ones((2, n), np.float32)
    mask[1, -4:] = 0
    if num_stages == 2:
        stages = [dssm, mid]
    else:
        din = 1.5 * np.sin(0.11 * i + 0.5 * b)
        stages = [dssm, mid, din]
    return [s.astype(np.float32) for s in stages], labels, mask


# Official values (lcron_method.md §10), float32, sigma = 1.
TWO_STAGE = {"total": 1.960171, "e2e": 1.428831, "single": [0.550823, 0.511856]}
THREE_STAGE = {"total": 4.443716, "e2e": 1.448614, "single": [2.106243, 2.024112, 1.859849]}
