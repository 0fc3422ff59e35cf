"""Modality-category extraction and cross-injection (CEFG).

A learnable category representation is pooled from each image's shallow (1/4) texture features
and classified visible vs infrared (cross-entropy in training). Each modality's representation is
added to the *other* modality's deep semantic features, which then pass through non-shared
per-modality transformer blocks; the result enhances the 1/8 texture features. Telling each
branch what the other camera sees lets it move its features towards a shared space.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn

from .attention import AttentionLayer


class ModalityExtractor(nn.Module):
    def __init__(self, cin: int, dim: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(cin, dim, 3, 2, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(dim, dim, 3, 2, 1), nn.ReLU(inplace=True))
        self.fc = nn.Linear(2 * dim, dim)
        self.classifier = nn.Linear(dim, 2)  # 0 = visible, 1 = infrared

    def forward(self, shallow: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """shallow: [B,C,h,w] -> (category [B,dim], logits [B,2])."""
        y = self.conv(shallow)
        pooled = torch.cat([y.mean(dim=(2, 3)), y.amax(dim=(2, 3))], dim=1)
        m = self.fc(pooled)
        return m, self.classifier(m)


class CEFG(nn.Module):
    def __init__(self, shallow_dim: int, semantic_dim: int, texture_dim: int, modality_dim: int,
                 layers: int, heads: int, inject: bool = True):
        super().__init__()
        self.use_injection = inject
        self.extract = ModalityExtractor(shallow_dim, modality_dim)
        self.inject = nn.Linear(modality_dim, semantic_dim)
        self.blocks_vis = nn.ModuleList([AttentionLayer(semantic_dim, heads) for _ in range(layers)])
        self.blocks_ir = nn.ModuleList([AttentionLayer(semantic_dim, heads) for _ in range(layers)])
        self.enhance = nn.Conv2d(semantic_dim, texture_dim, 1)

    def forward(self, shallow_v, shallow_t, sem_v, sem_t, tex_v, tex_t):
        """Returns enhanced (tex_v, tex_t), updated (sem_v, sem_t) [B,C,h,w], logits [2B,2]."""
        m, logits = self.extract(torch.cat([shallow_v, shallow_t]))  # one batch, per-item maths
        m_v, m_t = m.chunk(2)
        out = []
        for sem, other_m, blocks in ((sem_v, m_t, self.blocks_vis), (sem_t, m_v, self.blocks_ir)):
            b, c, h, w = sem.shape
            x = sem.flatten(2).transpose(1, 2)
            if self.use_injection:
                x = x + self.inject(other_m)[:, None, :]
            for blk in blocks:
                x = blk(x, x)
            out.append(x.transpose(1, 2).reshape(b, c, h, w))
        sem_v2, sem_t2 = out
        tex_v2, tex_t2 = (torch.cat([tex_v, tex_t]) + self.enhance(torch.cat(out))).chunk(2)
        return tex_v2, tex_t2, sem_v2, sem_t2, logits
