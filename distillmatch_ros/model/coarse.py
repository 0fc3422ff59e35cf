"""Coarse matching at 1/8: self/cross attention, similarity, dual-softmax, threshold, mutual NN.

Selection is written with fixed output shapes (top-K of the mutual-nearest rows, with a validity
mask) so the exported graph is static; K is ``max_matches`` (capped at the number of cells).
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn

from .attention import AttentionLayer


class CoarseMatching(nn.Module):
    def __init__(self, dim: int, layers: int, heads: int, temperature: float):
        super().__init__()
        # Even layers attend within an image, odd layers across the two (LoFTR's order).
        self.layers = nn.ModuleList([AttentionLayer(dim, heads) for _ in range(layers)])
        self.temperature = temperature

    def transform(self, fv: torch.Tensor, ft: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        for i, layer in enumerate(self.layers):
            if i % 2 == 0:
                fv, ft = layer(fv, fv), layer(ft, ft)
            else:
                fv, ft = layer(fv, ft), layer(ft, fv)
        return fv, ft

    def confidence(self, fv: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
        """Dual-softmax matching confidence [B, N_visible, N_thermal]."""
        c = fv.shape[-1]
        sim = (fv @ ft.transpose(1, 2)) / (c * self.temperature)
        return torch.softmax(sim, dim=1) * torch.softmax(sim, dim=2)

    @staticmethod
    def select(conf: torch.Tensor, threshold: float, k: int):
        """Mutual nearest neighbours above ``threshold``; returns the K best as fixed-size tensors.

        Returns idx_v [B,K] (visible cell), idx_t [B,K] (thermal cell), scores [B,K], valid [B,K].
        """
        k = min(k, conf.shape[1])
        row_val, row_idx = conf.max(dim=2)          # best thermal cell for each visible cell
        col_val = conf.amax(dim=1)                   # best confidence in each thermal cell's column
        # Mutual: the row's best is also its column's best. Comparing values instead of taking a
        # column argmax avoids a strided arg-reduction that cost more than the matmul on CPU.
        ok = (torch.gather(col_val, 1, row_idx) <= row_val) & (row_val > threshold)
        score = torch.where(ok, row_val, torch.zeros_like(row_val))
        top_val, idx_v = torch.topk(score, k, dim=1)
        idx_t = torch.gather(row_idx, 1, idx_v)
        return idx_v, idx_t, top_val, top_val > 0
