"""Texture branch: a CNN giving features at 1/2, 1/4 and 1/8 of the input.

The first five EfficientNet-Lite0 blocks (ImageNet-pretrained, gray stem) feed a small top-down
pyramid so the fine levels also see coarse context, as in LoFTR's and EfficientLoFTR's FPNs.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .efficientnet_lite import EfficientNetLite0, load_pretrained

_TAPS = (0, 2, 4)  # Lite0 blocks ending at 1/2 (16 ch), 1/4 (24 ch), 1/8 (40 ch)


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def sep_conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """Depthwise 3x3 + pointwise 1x1: a 3x3 conv's reach at about 1/9 of its cost (full-resolution
    3x3 convs were most of the network's CPU time at 640x512)."""
    return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                         nn.ReLU(inplace=True), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class TextureCNN(nn.Module):
    def __init__(self, dims: Sequence[int], pretrained: bool = True):
        super().__init__()
        self.backbone = EfficientNetLite0(in_channels=1, num_blocks=max(_TAPS) + 1)
        self.pretrained_loaded = load_pretrained(self.backbone, gray=True) if pretrained else False
        c2, c4, c8 = (self.backbone.block_channels[t] for t in _TAPS)
        d2, d4, d8 = dims
        self.lat8 = nn.Conv2d(c8, d8, 1)
        self.lat4 = nn.Conv2d(c4, d4, 1)
        self.lat2 = nn.Conv2d(c2, d2, 1)
        self.top8_4 = nn.Conv2d(d8, d4, 1)
        self.top4_2 = nn.Conv2d(d4, d2, 1)
        self.out8 = sep_conv_bn_relu(d8, d8)
        self.out4 = sep_conv_bn_relu(d4, d4)
        self.out2 = sep_conv_bn_relu(d2, d2)

    def forward(self, x: torch.Tensor, with_taps: bool = False):
        """x: [B,1,H,W] normalised gray. Returns (f2, f4, f8), or with ``with_taps`` (None, f4, f8,
        b2, b4): the raw backbone outputs at 1/2 and 1/4 that the cross-modal fine stage reads
        (it has its own 1/2 features, so the pyramid's 1/2 level is not computed)."""
        b2, b4, b8 = self.backbone(x, _TAPS)
        f8 = self.lat8(b8)
        f4 = self.lat4(b4) + F.interpolate(self.top8_4(f8), size=b4.shape[-2:], mode="bilinear",
                                           align_corners=False)
        if with_taps:
            return None, self.out4(f4), self.out8(f8), b2, b4
        f2 = self.lat2(b2) + F.interpolate(self.top4_2(f4), size=b2.shape[-2:], mode="bilinear",
                                           align_corners=False)
        return self.out2(f2), self.out4(f4), self.out8(f8)

    def fine_taps(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Only the raw 1/2 and 1/4 backbone outputs (fine-stage training skips the rest)."""
        b2, b4 = self.backbone(x, _TAPS[:2])
        return b2, b4
