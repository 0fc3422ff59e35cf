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


def local_expectation(logits: torch.Tensor, win: torch.Tensor, window: int, radius: int = 1) -> torch.Tensor:
    """Soft-argmax restricted to the (2r+1)^2 cells around the window's argmax.

    The expectation over a whole window is pulled towards the window centre whenever the
    distribution is not sharp: on the shipped model the estimated offset from the coarse cell
    centre was only about 0.25x the true offset, a bias that follows the 1/8 grid across the
    image and so survives any homography fit (EfficientLoFTR refines around the argmax for the
    same reason). Around the argmax the pull is at most one cell. Static shapes: argmax + gather.
    logits [B,K,n], win [B,K,n,2] -> [B,K,2].
    """
    am = logits.argmax(dim=-1)
    ay = torch.div(am, window, rounding_mode="floor")
    ax = am - ay * window
    offs = torch.arange(-radius, radius + 1, device=logits.device)
    yy = (ay.unsqueeze(-1).unsqueeze(-1) + offs.view(-1, 1)).clamp(0, window - 1)
    xx = (ax.unsqueeze(-1).unsqueeze(-1) + offs.view(1, -1)).clamp(0, window - 1)
    idx = (yy * window + xx).flatten(2)  # [B,K,(2r+1)^2]
    prob = torch.softmax(logits.gather(-1, idx), dim=-1)
    pos = win.gather(2, idx.unsqueeze(-1).expand(-1, -1, -1, 2))
    return (prob.unsqueeze(-1) * pos).sum(dim=2)


def read_out(logits: torch.Tensor, win: torch.Tensor, window: int, local: bool) -> torch.Tensor:
    """A window's position estimate: :func:`local_expectation`, or the soft-argmax over the whole
    window (the read-out of checkpoints made before it). logits [B,K,n], win [B,K,n,2] -> [B,K,2]."""
    if local:
        return local_expectation(logits, win, window)
    return (torch.softmax(logits, dim=-1).unsqueeze(-1) * win).sum(dim=2)


class FineLevel(nn.Module):
    """Searches a window of one feature level for the thermal position of each visible point."""

    def __init__(self, dim: int, window: int, stride: int, centred: bool = False, local: bool = False):
        super().__init__()
        self.window, self.stride, self.centred, self.local = window, stride, centred, local
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
        # [B,K,n,C] x [B,K,C,1]: a batched matmul (ONNX Runtime ran the einsum form 30x slower)
        logits = (ft @ fv.unsqueeze(-1)).squeeze(-1) * self.log_scale.exp()
        return logits, read_out(logits, win, self.window, self.local), win


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
