"""Semantic/texture feature aggregation (STFA).

Channel-wise cross-attention first (semantic = query, texture = key/value: a CxC attention over
channels, cheap and global), then spatial cross-attention (texture = query, the channel result =
key/value, linear attention), with a residual onto the texture features.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import AttentionLayer


class ChannelCrossAttention(nn.Module):
    def __init__(self, sem_dim: int, tex_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Conv2d(sem_dim, tex_dim, 1, bias=False)
        self.k = nn.Conv2d(tex_dim, tex_dim, 1, bias=False)
        self.v = nn.Conv2d(tex_dim, tex_dim, 1, bias=False)
        self.scale = nn.Parameter(torch.ones(heads, 1, 1))
        self.out = nn.Conv2d(tex_dim, tex_dim, 1)

    def forward(self, sem: torch.Tensor, tex: torch.Tensor) -> torch.Tensor:
        b, c, h, w = tex.shape
        hd = self.heads
        q = F.normalize(self.q(sem).view(b, hd, c // hd, h * w), dim=-1)
        k = F.normalize(self.k(tex).view(b, hd, c // hd, h * w), dim=-1)
        v = self.v(tex).view(b, hd, c // hd, h * w)
        attn = torch.softmax((q @ k.transpose(-1, -2)) * self.scale, dim=-1)  # [B,h,C/h,C/h]
        return self.out((attn @ v).view(b, c, h, w))


class STFA(nn.Module):
    def __init__(self, sem_dim: int, tex_dim: int, heads: int):
        super().__init__()
        self.channel = ChannelCrossAttention(sem_dim, tex_dim, heads)
        self.spatial = AttentionLayer(tex_dim, heads)

    def forward(self, sem: torch.Tensor, tex: torch.Tensor) -> torch.Tensor:
        b, c, h, w = tex.shape
        ch = self.channel(sem, tex)
        x = tex.flatten(2).transpose(1, 2)
        y = self.spatial(x, ch.flatten(2).transpose(1, 2))  # includes the residual onto x
        return y.transpose(1, 2).reshape(b, c, h, w)
