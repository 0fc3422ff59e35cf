"""Cross-modal fine matching: the two windows of a coarse match attend to each other.

A thermal edge and its visible counterpart rarely look alike on their own (polarity flips,
missing texture), so correlating single-image features inside a window localises poorly. Here,
as in LoFTR's fine stage and XoFTR (the visible/thermal matcher), the visible window and the
thermal window of each coarse match are read as token sets and pass through self and cross
attention before the correlation; then a soft-argmax gives the thermal position, first at 1/4
and then at 1/2 resolution, and a small head that sees both attended windows moves both points
by a bounded sub-pixel offset.

The fine features come from their own trainable layers over the frozen ImageNet taps of the
texture CNN (1/2 and 1/4), so this stage can learn cross-modal localisation without touching
the coarse level, and can be trained on ground-truth matches without running the rest of the
network (``training/train_fine.py``). Every shape is static (ONNX/TensorRT export).
"""
from __future__ import annotations

import math
from typing import Dict, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .fine import read_out, sample_points, window_offsets


def _conv_bn_relu(cin: int, cout: int, k: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, 1, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _sep_block(c: int, dilation: int = 1) -> nn.Sequential:
    """Depthwise 3x3 (optionally dilated, for reach at no extra cost) + pointwise 1x1."""
    return nn.Sequential(nn.Conv2d(c, c, 3, 1, dilation, dilation=dilation, groups=c, bias=False),
                         nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                         nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))


class FineFeatures(nn.Module):
    """Trainable fine features at 1/4 (``d4`` ch) and 1/2 (``d2`` ch) over frozen backbone taps."""

    def __init__(self, c2: int, c4: int, d2: int, d4: int):
        super().__init__()
        self.in4 = _conv_bn_relu(c4, d4)
        self.ctx4 = nn.Sequential(_sep_block(d4), _sep_block(d4, 2))
        self.in2 = _conv_bn_relu(c2, d2)
        self.up4_2 = nn.Conv2d(d4, d2, 1)
        self.ctx2 = nn.Sequential(_sep_block(d2), _sep_block(d2, 2))

    def forward(self, b2: torch.Tensor, b4: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        f4 = self.ctx4(self.in4(b4))
        f2 = self.in2(b2) + F.interpolate(self.up4_2(f4), size=b2.shape[-2:], mode="bilinear", align_corners=False)
        return self.ctx2(f2), f4


class TokenAttention(nn.Module):
    """Multi-head attention of ``x`` over ``src`` plus a small MLP, each with a residual.

    Written out with matmuls (no fused kernel) so ONNX and TensorRT export it as plain ops.
    Kept lean (no input concat, MLP of width ``dim``): it runs once per match, up to K=1024
    matches per pair, on a CPU.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.merge = nn.Linear(dim, dim, bias=False)
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        s = src.shape[1]
        h, d = self.heads, c // self.heads
        q = self.q(x).reshape(n, t, h, d).transpose(1, 2)
        k, v = self.kv(src).reshape(n, s, 2, h, d).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-1, -2) * (1.0 / math.sqrt(d)), dim=-1)
        x = x + self.merge((attn @ v).transpose(1, 2).reshape(n, t, c))
        x = self.norm1(x)
        return self.norm2(x + self.mlp(x))


class CrossWindowLevel(nn.Module):
    """One fine level: read both windows, let them attend to each other, soft-argmax.

    The visible window (``vis_window`` cells, centred on the visible point) and the thermal
    window (``window`` cells around the current thermal estimate) exchange information through
    cross attention (each layer: optional self attention inside each window, then thermal <-
    visible and visible <- thermal); the attended visible centre token is then correlated with
    every attended thermal token (cosine times a learnable temperature).
    """

    def __init__(self, dim: int, window: int, vis_window: int, stride: int, layers: int, heads: int,
                 self_attention: bool, local: bool = True):
        super().__init__()
        self.window, self.vis_window, self.stride, self.local = window, vis_window, stride, local
        self.pos_t = nn.Parameter(torch.randn(1, window * window, dim) * 0.02)
        self.pos_v = nn.Parameter(torch.randn(1, vis_window * vis_window, dim) * 0.02)
        self.self_blocks = nn.ModuleList(TokenAttention(dim, heads) for _ in range(layers if self_attention else 0))
        self.cross_blocks = nn.ModuleList(TokenAttention(dim, heads) for _ in range(layers))
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def tokens(self, feat: torch.Tensor, centre: torch.Tensor, window: int, size_wh):
        b, k, _ = centre.shape
        win = centre.unsqueeze(2) + window_offsets(window, self.stride, centre.device)  # [B,K,n,2]
        tok = sample_points(feat, win.reshape(b, -1, 2), size_wh).reshape(b * k, win.shape[2], feat.shape[1])
        return tok, win

    def forward(self, feat_v, feat_t, pv, pt, size_wh):
        """Returns logits [B,K,n], expected thermal point [B,K,2], attended tokens ([BK,.,C] x2), probs."""
        b, k, _ = pt.shape
        tv, _ = self.tokens(feat_v, pv, self.vis_window, size_wh)
        tt, win = self.tokens(feat_t, pt, self.window, size_wh)
        tv, tt = tv + self.pos_v, tt + self.pos_t
        for i, cross in enumerate(self.cross_blocks):
            if len(self.self_blocks):
                tv, tt = self.self_blocks[i](tv, tv), self.self_blocks[i](tt, tt)
            tv, tt = cross(tv, tt), cross(tt, tv)
        centre = F.normalize(tv[:, tv.shape[1] // 2], dim=-1)
        logits = (F.normalize(tt, dim=-1) @ centre.unsqueeze(-1)).squeeze(-1) * self.log_scale.exp()
        logits = logits.reshape(b, k, -1)
        return logits, read_out(logits, win, self.window, self.local), tv, tt, torch.softmax(logits, dim=-1)


class CrossFine(nn.Module):
    """1/4 then 1/2 cross-attended windows, then a sub-pixel head that sees both windows."""

    def __init__(self, c2: int, c4: int, cfg: Dict):
        super().__init__()
        d2, d4 = int(cfg["cross_fine_dims"][0]), int(cfg["cross_fine_dims"][1])
        layers, heads = int(cfg["cross_fine_layers"]), int(cfg["cross_fine_heads"])
        self_attn, vw = bool(cfg["cross_fine_self_attention"]), int(cfg["cross_fine_vis_window"])
        local = cfg["fine_expectation"] == "local"
        self.features = FineFeatures(c2, c4, d2, d4)
        self.level4 = CrossWindowLevel(d4, int(cfg["fine_window_4"]), vw, 4, layers, heads, self_attn, local)
        self.level2 = CrossWindowLevel(d2, int(cfg["fine_window_2"]), vw, 2, layers, heads, self_attn, local)
        n2 = int(cfg["fine_window_2"]) ** 2
        self.subpixel = nn.Sequential(nn.Linear(2 * d2 + n2, 64), nn.ReLU(inplace=True), nn.Linear(64, 4))
        nn.init.zeros_(self.subpixel[-1].weight)  # starts as "no offset"
        nn.init.zeros_(self.subpixel[-1].bias)

    def forward(self, b2v, b2t, b4v, b4t, pv, pt0, size_wh) -> Dict[str, torch.Tensor]:
        """b*: frozen backbone taps per modality; pv/pt0 [B,K,2] the coarse match in working pixels."""
        f2v, f4v = self.features(b2v, b4v)
        f2t, f4t = self.features(b2t, b4t)
        logits4, pt1, _, _, _ = self.level4(f4v, f4t, pv, pt0, size_wh)
        logits2, pt2, tv, tt, prob = self.level2(f2v, f2t, pv, pt1, size_wh)
        b, k, _ = pv.shape
        centre_v = tv[:, tv.shape[1] // 2]
        at_t = (prob.reshape(b * k, -1, 1) * tt).sum(1)  # the thermal token at the expectation
        d = torch.tanh(self.subpixel(torch.cat([centre_v, at_t, prob.reshape(b * k, -1)], dim=-1))).reshape(b, k, 4)
        return {"fine4_logits": logits4, "fine4_thermal": pt1, "fine2_logits": logits2, "fine2_thermal": pt2,
                "visible_points": pv + d[..., :2], "thermal_points": pt2 + d[..., 2:]}
