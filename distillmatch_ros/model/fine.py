"""Fine matching on 1/4 and 1/2 windows around each coarse match, and sub-pixel refinement.

The visible point of a match stays at its 1/8 cell centre; the thermal point is searched in a
window of the 1/4 features (correlation, softmax, expectation), then in a smaller window of the
1/2 features, then a small MLP predicts sub-pixel offsets in both images (LoFTR/EfficientLoFTR
style two-stage refinement). Windows are read with ``grid_sample`` so every shape is static.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def sample_points(feat: torch.Tensor, pts: torch.Tensor, size_wh: Tuple[int, int]) -> torch.Tensor:
    """Bilinear features at pixel positions. feat [B,C,h,w], pts [B,P,2] in input pixels -> [B,P,C].

    Every level covers the same image extent, so the normalised coordinate of pixel x is
    (x + 0.5) / W * 2 - 1 whatever the level's stride (align_corners=False convention).
    """
    w, h = size_wh
    g = torch.stack([(pts[..., 0] + 0.5) * (2.0 / w) - 1.0, (pts[..., 1] + 0.5) * (2.0 / h) - 1.0], dim=-1)
    out = F.grid_sample(feat, g.unsqueeze(2), mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.squeeze(3).transpose(1, 2)


def window_offsets(window: int, stride: float, device=None) -> torch.Tensor:
    """[window*window, 2] pixel offsets (x, y) of a square window centred on 0, row-major."""
    r = (torch.arange(window, device=device, dtype=torch.float32) - (window - 1) / 2) * stride
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)


class FineLevel(nn.Module):
    """Searches a window of one feature level for the thermal position of each visible point."""

    def __init__(self, dim: int, window: int, stride: int, centred: bool = False):
        super().__init__()
        self.window, self.stride, self.centred = window, stride, centred
        self.proj = nn.Linear(dim, dim)
        # Cosine similarity times a learnable temperature (log-parametrised, starts at 10): raw
        # ReLU features correlate positively everywhere, which left the window softmax flat.
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def forward(self, feat_v, feat_t, pv, pt, size_wh):
        """Returns window logits [B,K,w*w], soft-argmax thermal position [B,K,2], window pixels [B,K,w*w,2]."""
        b, k, _ = pt.shape
        fv = self.proj(sample_points(feat_v, pv, size_wh))   # [B,K,C]
        win = pt.unsqueeze(2) + window_offsets(self.window, self.stride, pt.device)  # [B,K,n,2]
        ft = self.proj(sample_points(feat_t, win.reshape(b, -1, 2), size_wh)).reshape(b, k, -1, fv.shape[-1])
        if self.centred:
            # Remove the feature every window cell shares before the cosine (NCC across the
            # window): neighbouring 1/2-level features are so alike that the plain cosine varied
            # by about 0.02 over a 3x3 window even on identical images (fine_level_probe.py).
            mu = ft.mean(dim=2, keepdim=True)
            ft, fv = ft - mu, fv - mu.squeeze(2)
        fv, ft = F.normalize(fv, dim=-1), F.normalize(ft, dim=-1)
        logits = torch.einsum("bkc,bknc->bkn", fv, ft) * self.log_scale.exp()
        prob = torch.softmax(logits, dim=-1)
        expected = (prob.unsqueeze(-1) * win).sum(dim=2)
        return logits, expected, win


class SubpixelRefiner(nn.Module):
    """MLP predicting bounded offsets (at most one 1/2-level cell) for both points of a match."""

    def __init__(self, dim: int, window: int, stride: int = 2):
        super().__init__()
        self.stride = stride
        self.mlp = nn.Sequential(nn.Linear(2 * dim + window * window, 64), nn.ReLU(inplace=True),
                                 nn.Linear(64, 64), nn.ReLU(inplace=True), nn.Linear(64, 4))

    def forward(self, feat_v, feat_t, pv, pt, window_logits, size_wh):
        fv = sample_points(feat_v, pv, size_wh)
        ft = sample_points(feat_t, pt, size_wh)
        d = torch.tanh(self.mlp(torch.cat([fv, ft, torch.softmax(window_logits, -1)], dim=-1))) * self.stride
        return pv + d[..., :2], pt + d[..., 2:]
