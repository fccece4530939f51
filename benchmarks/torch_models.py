"""The ``paper`` preset's cascade written in PyTorch by us, for benchmarks/bench_vs_torch.py.

Same architecture, sizes and work as ``CascadeModel.default(schema, S, preset="paper")``
(lcron_tf/models/paper.py; lcron_method.md §6), reading the same canonical batch dict (torch
tensors): per model one fused embedding table laid out by :func:`lcron_tf.models.field_layout`
(frozen zero padding rows, dense gradients as ``nn.Embedding``), the DSSM towers, the MLP
pre-ranker and DIN with its attention MLP evaluated three ways: ``"loop"`` (lcron_tf's
algorithm: the split first layer and the ReLU hidden layer summed unit by unit with a
written-out gradient, no ``[B, N, H, U]`` tensor), ``"split"`` (split first layer, the
hidden layer materialised) or ``"concat"`` (the official form: an MLP on the concatenated
``[B N, H, 2 D]`` pairs). The loss is ``tests/torch_oracle.lcron_loss_torch`` (one
evaluation; the code the parity tests check against lcron_tf) with learned sigmas.

Written from the formulas, not from the official code. Torch is an optional dependency: this
module is imported only by the benchmark and its test.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from torch_oracle import lcron_loss_torch  # noqa: E402

PADDING_LOGIT = -(2.0**30) + 1.0


def mlp(sizes: Sequence[int], final_relu: bool = False) -> nn.Sequential:
    """Linear layers ``sizes[0] -> sizes[1] -> ...`` with ReLU between them."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_relu:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class FieldEmbedding(nn.Module):
    """One model's tables in one ``[sum vocab, d]`` parameter; padding rows are zero/frozen."""

    def __init__(self, layout: object, emb_dim: int) -> None:
        super().__init__()
        self.offsets, total = {}, 0
        for name, vocab in layout.tables.items():
            self.offsets[name] = total
            total += vocab
        weight = torch.empty(total, emb_dim).uniform_(-0.05, 0.05)
        weight[list(self.offsets.values())] = 0.0  # row 0 of every table
        self.weight = nn.Parameter(weight)

    def lookup(self, ids: torch.Tensor, tables: Sequence[str]) -> torch.Tensor:
        """int ``[..., C]`` -> ``[..., C, d]``; id 0 of any table gives zeros (no gradient)."""
        offsets = torch.tensor([self.offsets[t] for t in tables], dtype=ids.dtype)
        emb = nn.functional.embedding(ids + offsets, self.weight)
        return emb.masked_fill((ids == 0)[..., None], 0.0)


class HingeLogits(torch.autograd.Function):
    """``sum_u w_u relu(a[b, h, u] + c[b, n, u])`` one ``[B, N, H]`` slice per unit, with the
    gradient written out (the same algorithm as lcron_tf.ops.attention.hinge_logits)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, c: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        at, ct = a.permute(2, 0, 1).contiguous(), c.permute(2, 0, 1).contiguous()
        out = torch.zeros(c.shape[0], c.shape[1], a.shape[1], dtype=a.dtype)
        for u in range(at.shape[0]):
            out += torch.relu(ct[u][:, :, None] + at[u][:, None, :]) * w[u]
        ctx.save_for_backward(at, ct, w)
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        at, ct, w = ctx.saved_tensors
        da, dc, dw = torch.empty_like(at), torch.empty_like(ct), torch.empty_like(w)
        for u in range(at.shape[0]):
            pre = ct[u][:, :, None] + at[u][:, None, :]
            gm = torch.where(pre > 0, g * w[u], 0.0)
            da[u], dc[u] = gm.sum(1), gm.sum(2)
            dw[u] = (torch.relu(pre) * g).sum()
        return da.permute(1, 2, 0), dc.permute(1, 2, 0), dw


class _Tower(nn.Module):
    def __init__(self, layout: object, emb_dim: int, has_history_features: bool) -> None:
        super().__init__()
        self.layout = layout
        self.hf = has_history_features
        self.embedding = FieldEmbedding(layout, emb_dim)

    def user(self, b: Mapping[str, torch.Tensor]) -> torch.Tensor:
        ids = torch.cat([b["user_id"][:, None], b["user_features"]], 1)
        return self.embedding.lookup(ids, self.layout.user).flatten(-2)

    def items(self, b: Mapping[str, torch.Tensor]) -> torch.Tensor:  # [B, N, 1 + F, d]
        ids = torch.cat([b["item_id"][..., None], b["item_features"]], -1)
        return self.embedding.lookup(ids, self.layout.item)

    def history(self, b: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = b["history"][..., None]
        if self.hf:
            ids = torch.cat([ids, b["history_features"]], -1)
        emb = self.embedding.lookup(ids, self.layout.history).flatten(-2)  # [B, H, (1+Fh) d]
        return emb, (b["history"] > 0).to(emb.dtype)

    def query_input(self, b: Mapping[str, torch.Tensor]) -> torch.Tensor:
        hist, mask = self.history(b)
        mean = hist.sum(1) / mask.sum(1, keepdim=True).clamp_min(1.0)  # padding rows are 0
        return torch.cat([self.user(b), mean], -1)


class Dssm(_Tower):
    def __init__(self, layout, emb_dim, hf, units: Sequence[int]) -> None:
        super().__init__(layout, emb_dim, hf)
        d_user = (len(layout.user) + len(layout.history)) * emb_dim
        self.user_tower = mlp([d_user, *units])
        self.item_tower = mlp([len(layout.item) * emb_dim, *units])

    def forward(self, b):
        q = self.user_tower(self.query_input(b))  # [B, D]
        v = self.item_tower(self.items(b).flatten(-2))  # [B, N, D]
        return torch.einsum("bd,bnd->bn", q, v)


class PreRanker(_Tower):
    def __init__(self, layout, emb_dim, hf, units: Sequence[int]) -> None:
        super().__init__(layout, emb_dim, hf)
        width = (len(layout.user) + len(layout.history) + len(layout.item)) * emb_dim
        self.head = mlp([width, *units, 1])

    def forward(self, b):
        items = self.items(b).flatten(-2)
        user = self.query_input(b)[:, None, :].expand(-1, items.shape[1], -1)
        return self.head(torch.cat([user, items], -1)).squeeze(-1)


class Din(_Tower):
    def __init__(self, layout, emb_dim, hf, units: Sequence[int], attention_units: int,
                 attention: str = "split") -> None:
        super().__init__(layout, emb_dim, hf)
        self.attention_mode = attention
        w = len(layout.history) * emb_dim
        self.att1, self.att2 = nn.Linear(2 * w, attention_units), nn.Linear(attention_units, 1)
        width = (len(layout.user) + 2 * len(layout.history)
                 + len(layout.other)) * emb_dim
        self.head = mlp([width, *units, 1])

    def attention_logits(self, hist: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """``[B, H, W]``, ``[B, N, W]`` -> ``[B, N, H]``."""
        if self.attention_mode == "concat":  # the official form: the pair tensor
            n, h = cand.shape[1], hist.shape[1]
            pairs = torch.cat([hist[:, None].expand(-1, n, -1, -1),
                               cand[:, :, None].expand(-1, -1, h, -1)], -1)
            return self.att2(torch.relu(self.att1(pairs))).squeeze(-1)
        w = hist.shape[-1]
        a = hist @ self.att1.weight[:, :w].T  # [B, H, U]
        c = cand @ self.att1.weight[:, w:].T + self.att1.bias  # [B, N, U]
        if self.attention_mode == "loop":  # lcron_tf's algorithm
            return HingeLogits.apply(a, c, self.att2.weight[0]) + self.att2.bias[0]
        hidden = torch.relu(c[:, :, None, :] + a[:, None, :, :])  # [B, N, H, U]
        return hidden @ self.att2.weight[0] + self.att2.bias[0]

    def forward(self, b):
        hist, hmask = self.history(b)
        fields = self.items(b)  # [B, N, 1 + F, d]
        cand = fields[:, :, list(self.layout.compared)].flatten(-2)
        logits = self.attention_logits(hist, cand)
        logits = logits.masked_fill(hmask[:, None, :] == 0, PADDING_LOGIT)
        interest = torch.softmax(logits, -1) @ hist  # [B, N, W]
        user = self.user(b)[:, None, :].expand(-1, cand.shape[1], -1)
        parts = [user, interest, cand]
        if self.layout.other:
            parts.append(fields[:, :, list(self.layout.other)].flatten(-2))
        return self.head(torch.cat(parts, -1)).squeeze(-1)


class TorchCascade(nn.Module):
    """DSSM -> [MLP ->] DIN with the LCRON loss and one learned sigma per stage."""

    def __init__(self, schema: object, num_stages: int, *, emb_dim: int = 8,
                 retrieval_units=(128, 64, 32), pre_ranker_units=(128, 64, 32),
                 ranker_units=(128, 128, 32), attention_units: int = 80,
                 attention: str = "split", gt_num: int = 10) -> None:
        super().__init__()
        from lcron_tf.models import field_layout

        layout = field_layout(schema)
        hf = bool(schema.history_feature_names)
        stages: list[nn.Module] = [Dssm(layout, emb_dim, hf, retrieval_units)]
        if num_stages == 3:
            stages.append(PreRanker(layout, emb_dim, hf, pre_ranker_units))
        stages.append(Din(layout, emb_dim, hf, ranker_units, attention_units, attention))
        self.stages = nn.ModuleList(stages)
        self.sigmas = nn.Parameter(torch.ones(num_stages))
        self.gt_num = gt_num
        self.binarize = num_stages == 3

    def forward(self, b: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Scores ``[B, S, N]``."""
        return torch.stack([s(b) for s in self.stages], 1)

    def loss(self, b: Mapping[str, torch.Tensor]) -> torch.Tensor:
        scores = self(b)
        out = lcron_loss_torch(list(scores.unbind(1)), b["label"], b["mask"],
                               gt_num=self.gt_num, k=self.gt_num, binarize=self.binarize,
                               sigmas=self.sigmas)
        return out["total"]


def to_torch(batch: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """numpy / TF batch -> torch tensors (int64 ids, float32 label/mask)."""
    import numpy as np

    out = {}
    for k, v in batch.items():
        a = np.asarray(v)
        out[k] = torch.from_numpy(a.astype(np.float32 if a.dtype.kind == "f" else np.int64))
    return out
