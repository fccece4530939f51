"""An independent PyTorch re-derivation of the official LCRON computation (test oracle).

Written from the formulas in ../shared/reference/lcron_method.md §2–§3 (the official
kwai/LCRON code is PyTorch): NeuralSort with the row sums of |s_i - s_j|, the
label matrix by the official tau = 1e-4 NeuralSort trick (not our exact construction),
the prefix mask from the candidate count, detached column-sum normalisers, "down"
terms from the rows >= k, eps = 1e-6, means over N then over the batch, L_single
gated by count > k. Used by the parity tests, to compare values and gradients, and by
benchmarks/bench_vs_torch.py, which times :func:`lcron_loss_torch` (one evaluation) against
lcron_tf: the torch code that is timed is the code the parity tests check.
"""

from __future__ import annotations

import numpy as np
import torch


def _neuralsort(s: torch.Tensor, tau: float) -> torch.Tensor:
    n = s.shape[1]
    pair = (s[:, :, None] - s[:, None, :]).abs()  # [B, N, N]
    row_sums = pair.sum(-1)  # [B, N]
    scale = n + 1 - 2 * torch.arange(1, n + 1, dtype=s.dtype, device=s.device)  # [N]
    logits = scale[None, :, None] * s[:, None, :] - row_sums[:, None, :]  # [B, row, item]
    return torch.softmax(logits / tau, dim=-1)


def _softsort(s: torch.Tensor, tau: float) -> torch.Tensor:
    srt, _ = torch.sort(s, dim=1, descending=True)
    return torch.softmax(-(srt[:, :, None] - s[:, None, :]).abs() / tau, dim=-1)


def lcron_loss_torch(
    stage_logits: list[torch.Tensor],
    labels: torch.Tensor,
    mask: torch.Tensor,
    gt_num: int = 10,
    k: int = 10,
    tau: float = 50.0,
    binarize: bool = False,
    sort: str = "neural",
    sigmas: torch.Tensor | None = None,
) -> dict:
    """One evaluation of the LCRON loss on torch tensors (differentiable).

    Args:
      stage_logits: one ``[B, N]`` tensor per stage, first stage first.
      labels, mask: ``[B, N]`` (mask 0/1; the official prefix mask ``arange(N) < count``
        is derived from its row sums).
      sigmas: ``[S]`` UWL weights (``L_e2e + sum 0.5 / sigma^2 L_single + ln prod sigma``);
        None = all 1 (``L_e2e + sum 0.5 L_single``).

    Returns:
      dict with ``total`` (scalar tensor), ``e2e`` and ``single`` (list of scalars).
    """
    dtype = labels.dtype
    n = labels.shape[1]
    count = mask.sum(1)
    m = (torch.arange(n, dtype=dtype, device=labels.device)[None, :] < count[:, None]).to(dtype)
    s2 = m[:, :, None] * m[:, None, :]
    op = _neuralsort if sort == "neural" else _softsort
    lab_mat = op(labels, 1e-4)
    if binarize:
        lab_mat = (lab_mat > 0.001).to(dtype)
    lab_mat = lab_mat * s2
    y = lab_mat[:, :gt_num].sum(1)
    z = lab_mat[:, gt_num:].sum(1)
    ups, dns = [], []
    for x in stage_logits:
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
    if sigmas is None:
        total = e2e + sum(0.5 * v for v in singles)
    else:
        total = e2e + sum(0.5 / sigmas[i] ** 2 * v for i, v in enumerate(singles))
        total = total + torch.log(torch.prod(sigmas))
    return {"total": total, "e2e": e2e, "single": singles}


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
    out = lcron_loss_torch(
        xs, torch.tensor(labels, dtype=dtype), torch.tensor(mask, dtype=dtype), gt_num=gt_num,
        k=k, tau=tau, binarize=binarize, sort=sort,
    )
    grads = torch.autograd.grad(out["total"], xs)
    return {
        "total": float(out["total"].detach()),
        "e2e": float(out["e2e"].detach()),
        "single": [float(v.detach()) for v in out["single"]],
        "grads": [g.numpy() for g in grads],
    }
