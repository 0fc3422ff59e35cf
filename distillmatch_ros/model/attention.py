"""Attention building blocks shared by CEFG, STFA and coarse matching.

Linear attention (the elu+1 kernel of Katharopoulos et al., as in LoFTR) keeps the cost linear
in the number of 1/8 tokens, which is what makes 640x512 affordable on a CPU, and exports to
ONNX/TensorRT with plain matmuls.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """q: [B,L,H,D], k/v: [B,S,H,D] -> [B,L,H,D]."""
    q = F.elu(q) + 1
    k = F.elu(k) + 1
    kv = torch.einsum("bshd,bshv->bhdv", k, v)
    z = 1.0 / (torch.einsum("blhd,bhd->blh", q, k.sum(dim=1)) + eps)
    return torch.einsum("blhd,bhdv,blh->blhv", q, kv, z)


class AttentionLayer(nn.Module):
    """Pre-projection multi-head linear attention + MLP with residuals (LoFTR encoder layer)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.merge = nn.Linear(dim, dim, bias=False)
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(2 * dim, 2 * dim, bias=False), nn.ReLU(inplace=True),
                                 nn.Linear(2 * dim, dim, bias=False))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """x: [B,L,C] queries; source: [B,S,C] keys/values."""
        b, n, c = x.shape
        h = self.heads
        q = self.q(x).view(b, n, h, c // h)
        k = self.k(source).view(b, source.shape[1], h, c // h)
        v = self.v(source).view(b, source.shape[1], h, c // h)
        msg = self.norm1(self.merge(linear_attention(q, k, v).reshape(b, n, c)))
        msg = self.norm2(self.mlp(torch.cat([x, msg], dim=-1)))
        return x + msg


def sine_position_encoding(dim: int, h: int, w: int, device=None, dtype=None) -> torch.Tensor:
    """2-D sinusoidal encoding [1,dim,h,w] (LoFTR's form), built from the grid size alone."""
    pe = torch.zeros(dim, h, w, device=device, dtype=dtype)
    ys = torch.arange(h, device=device, dtype=torch.float32).unsqueeze(1).expand(h, w)
    xs = torch.arange(w, device=device, dtype=torch.float32).unsqueeze(0).expand(h, w)
    n = dim // 4
    div = torch.exp(torch.arange(n, device=device, dtype=torch.float32) * (-math.log(10000.0) / n))
    div = div[:, None, None]
    pe[0::4] = torch.sin(xs[None] * div)
    pe[1::4] = torch.cos(xs[None] * div)
    pe[2::4] = torch.sin(ys[None] * div)
    pe[3::4] = torch.cos(ys[None] * div)
    return pe.unsqueeze(0)
