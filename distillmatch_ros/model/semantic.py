"""Semantic branch (KD-VFM): a lightweight student encoder distilled from a frozen teacher.

The student runs at inference; the teacher (DINOv2/DINOv3 ViT-S or the offline stand-in) runs
only in training, where ``project`` maps the student's 1/8 features to the teacher's width for
the distillation loss. Depthwise-separable blocks with growing dilation give the student a
large receptive field cheaply, which is what the teacher's global features demand.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .texture import conv_bn_relu, sep_conv_bn_relu


class DWBlock(nn.Module):
    """Residual depthwise-separable block."""

    def __init__(self, c: int, dilation: int = 1):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, 1, dilation, dilation=dilation, groups=c, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.pw = nn.Conv2d(c, c, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.pw(self.act(self.bn1(self.dw(x)))))


class SemanticStudent(nn.Module):
    def __init__(self, dim: int, teacher_dim: int):
        super().__init__()
        self.stem = nn.Sequential(
            conv_bn_relu(1, 24, 3, 2),           # 1/2
            sep_conv_bn_relu(24, 48, 2),         # 1/4
            sep_conv_bn_relu(48, dim, 2),        # 1/8
        )
        self.blocks = nn.Sequential(*[DWBlock(dim, d) for d in (1, 2, 4, 8, 1)])
        # Used only in training: student features -> teacher feature space.
        self.project = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.ReLU(inplace=True),
                                     nn.Conv2d(dim, teacher_dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,1,H,W] normalised gray -> [B,dim,H/8,W/8]."""
        return self.blocks(self.stem(x))
