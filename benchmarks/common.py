"""What several benchmarks share: the checkout's paths, synthetic images, the tiny model at a
working size.

Benchmarks run from the repository root as modules (``python -m benchmarks.<name>``), so the
checkout's ``distillmatch_ros`` and ``benchmarks`` import without touching ``sys.path``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# Data and peer weights live beside the checkout on the development machine, not in it.
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"


def parse_size(text: str) -> tuple:
    """``"640x512"`` -> ``(640, 512)`` (width, height)."""
    w, h = text.lower().split("x")
    return int(w), int(h)


def textured(h, w, seed):
    """A smooth random gray image (uint8, h x w): texture a matcher can find, from any seed."""
    import cv2
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(0, 255, (h // 8, w // 8)).astype(np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)


def sized_model(size):
    """The shipped tiny model (random weights if not shipped yet) at working size ``size``."""
    from distillmatch_ros.checkpoint import load_checkpoint
    from distillmatch_ros.model import build_model, with_input_size
    shipped = REPO / "models" / "distillmatch_tiny.pt"
    if shipped.exists():
        model, card = load_checkpoint(shipped)
        return with_input_size(model, size), card, "shipped"
    return build_model("tiny", input_size=list(size), pretrained_backbone=False).eval(), {}, "random"
