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


def head_mask(dim: int, heads: int) -> torch.Tensor:
    """[dim, dim] block-diagonal ones: channel i and j belong to the same head."""
    d = dim // heads
    return torch.kron(torch.eye(heads), torch.ones(d, d))


def feature_map(x: torch.Tensor) -> torch.Tensor:
    """elu(x) + 1, written as relu(x) + exp(min(x, 0)): the same values, and two vectorised
    kernels in ONNX Runtime instead of its slower Elu."""
    return F.relu(x) + torch.exp(torch.clamp(x, max=0.0))


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                     eps: float = 1e-6) -> torch.Tensor:
    """Multi-head linear attention on merged heads. q: [B,L,C], k/v: [B,S,C], mask: :func:`head_mask`.

    Per head h: out = phi(q_h) (phi(k_h)^T v_h) / (phi(q_h) . sum_s phi(k_h)), phi = elu + 1.
    The heads' [D,D] products are the diagonal blocks of the full [C,C] product, so masking it
    and one [L,C] x [C,2C] matmul compute all heads at once: plain contiguous GEMMs, where the
    per-head einsums with their transposes were 40 % of the ONNX Runtime time on a CPU.
    """
    q, k = feature_map(q), feature_map(k)
    kv = (k.transpose(1, 2) @ v) * mask                     # [B,C,C], block h = k_h^T v_h
    ksum = k.sum(dim=1).unsqueeze(-1) * mask                # [B,C,C], block h = sum_s k_h, repeated
    num_den = q @ torch.cat([kv, ksum], dim=2)              # [B,L,2C]
    num, den = num_den.chunk(2, dim=-1)
    return num / (den + eps)


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
        self.register_buffer("head_mask", head_mask(dim, heads), persistent=False)

    def forward(self, x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """x: [B,L,C] queries; source: [B,S,C] keys/values."""
        # One GEMM for the projections that read the same tokens (q, k, v in self attention; k, v
        # in cross attention): wider matmuls run faster, and an exported graph folds the weights.
        if source is x:
            q, k, v = F.linear(x, torch.cat([self.q.weight, self.k.weight, self.v.weight])).chunk(3, dim=-1)
        else:
            q = self.q(x)
            k, v = F.linear(source, torch.cat([self.k.weight, self.v.weight])).chunk(2, dim=-1)
        msg = self.norm1(self.merge(linear_attention(q, k, v, self.head_mask)))
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
