"""An independent PyTorch re-derivation of the official LCRON computation (test oracle).

Written from the formulas in ../shared/reference/lcron_method.md §2–§3 (the official
kwai/LCRON code is PyTorch): NeuralSort with the row sums of |s_i - s_j|, the
label matrix by the official tau = 1e-4 NeuralSort trick (not our exact construction),
the prefix mask from the candidate count, detached column-sum normalisers, "down"
terms from the rows >= k, eps = 1e-6, means over N then over the batch, L_single
gated by count > k. Used only by tests, to compare values and gradients.
"""

from __future__ import annotations

import numpy as np
import torch


def _neuralsort(s: torch.Tensor, tau: float) -> torch.Tensor:
    n = s.shape[1]
    pair = (s[:, :, None] - s[:, None, :]).abs()  # [B, N, N]
    row_sums = pair @ torch.ones(n, 1, dtype=s.dtype)  # [B, N, 1]
    scale = n + 1 - 2 * torch.arange(1, n + 1, dtype=s.dtype)  # [N]
    logits = scale[None, :, None] * s[:, None, :] - row_sums.transpose(1, 2)  # [B, row, item]
    return torch.softmax(logits / tau, dim=-1)


def _softsort(s: torch.Tensor, tau: float) -> torch.Tensor:
    srt, _ = torch.sort(s, dim=1, descending=True)
    return torch.softmax(-(srt[:, :, None] - s[:, None, :]).abs() / tau, dim=-1)


def lcron_reference(
    stage_logits: list[np.ndarray],
    labels: np.ndarray,
    mask: np.ndarray,
    gt_num: int = 10,
    k: int = 10,
    tau: float = 50.0,
    binarize: bool = False,
    sort: str = "neural",
    dtype: torch.dtype = torch.float32,
) -> dict:
    """Returns total/e2e/single values and d(total)/d(stage logits) as numpy arrays."""
    xs = [torch.tensor(x, dtype=dtype, requires_grad=True) for x in stage_logits]
    lab = torch.tensor(labels, dtype=dtype)
    msk = torch.tensor(mask, dtype=dtype)
    n = lab.shape[1]
    count = msk.sum(1)
    m = (torch.arange(n, dtype=dtype)[None, :] < count[:, None]).to(dtype)
    s2 = m[:, :, None] * m[:, None, :]
    op = _neuralsort if sort == "neural" else _softsort
    lab_mat = op(lab, 1e-4)
    if binarize:
        lab_mat = (lab_mat > 0.001).to(dtype)
    lab_mat = lab_mat * s2
    y = lab_mat[:, :gt_num].sum(1)
    z = lab_mat[:, gt_num:].sum(1)
    ups, dns = [], []
    for x in xs:
        p = op(x, tau) * s2
        c = p.detach().sum(1)
        ups.append(p[:, :k].sum(1) / (c + 1e-6))
        dns.append(p[:, k:].sum(1) / (c + 1e-6))
    prod_up = torch.stack(ups).prod(0)
    prod_keep = torch.stack([1 - d for d in dns]).prod(0)
    e2e = (
        (-torch.log(prod_up + 1e-6) * y).mean(-1)
        + (-torch.log(1 - prod_keep + 1e-6) * torch.clamp(1 - y, 0, 1)).mean(-1)
    ).mean()
    singles = []
    for up, dn in zip(ups, dns):
        per = (-torch.log(up + 1e-6) * y * m).mean(-1) + (-torch.log(dn + 1e-6) * z * m).mean(-1)
        singles.append((per * (count > k).to(dtype)).mean())
    total = e2e + sum(0.5 * v for v in singles)
    grads = torch.autograd.grad(total, xs)
    return {
        "total": float(total.detach()),
        "e2e": float(e2e.detach()),
        "single": [float(v.detach()) for v in singles],
        "grads": [g.numpy() for g in grads],
    }
