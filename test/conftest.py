"""Shared fixtures: a small random-weight checkpoint, the shipped model, the shared data folder."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# One thread per test process: the CI machine has 2 cores and some tests start a node beside.
torch.set_num_threads(1)
os.environ.setdefault("DISTILLMATCH_CACHE", str(REPO / ".cache" / "test-cache"))


def _random_checkpoint(tmp_path_factory, name: str, **overrides) -> Path:
    """A tiny-preset checkpoint with random weights at a small working size (fast on CPU)."""
    from distillmatch_ros.checkpoint import save_checkpoint
    from distillmatch_ros.model import build_model
    torch.manual_seed(0)
    model = build_model("tiny", input_size=[160, 128], pretrained_backbone=False, max_matches=256, **overrides)
    path = tmp_path_factory.mktemp("ckpt") / f"{name}.pt"
    save_checkpoint(path, model, {"name": name, "note": "random weights for tests"})
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    # The whole-window read-out: random windows are nearly flat, and an argmax read-out over
    # them flips on float rounding (parity of that read-out is checked on the shipped weights).
    return _random_checkpoint(tmp_path_factory, "tiny_random", fine_expectation="soft")


@pytest.fixture(scope="session")
def cross_checkpoint(tmp_path_factory) -> Path:
    """As ``tiny_checkpoint``, with the cross-modal fine stage (fine_stage='cross')."""
    return _random_checkpoint(tmp_path_factory, "cross_random", fine_stage="cross")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent (it only exists on the development machine)")
    return SHARED_DATA


def shipped_model_path():
    """The default shipped model, or None when it has not been trained into models/ yet."""
    p = REPO / "models" / "distillmatch_tiny.pt"
    return p if p.exists() else None


@pytest.fixture(scope="session")
def shipped_model() -> Path:
    p = shipped_model_path()
    if p is None:
        pytest.skip("models/distillmatch_tiny.pt is not shipped yet")
    return p


@pytest.fixture(scope="session")
def training_data_root(tmp_path_factory) -> Path:
    """Generated aligned pairs (visible/ + thermal/) and a 2-pair npz validation set."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for side in ("visible", "thermal"):
        (root / "pairs" / side).mkdir(parents=True)
    (root / "val").mkdir()
    for i in range(4):
        base = cv2.resize(rng.integers(0, 255, (12, 16, 3)).astype(np.uint8), (128, 96),
                          interpolation=cv2.INTER_CUBIC)
        th = 255 - cv2.GaussianBlur(cv2.cvtColor(base, cv2.COLOR_BGR2GRAY), (0, 0), 1.0)
        cv2.imwrite(str(root / "pairs" / "visible" / f"{i}.png"), base)
        cv2.imwrite(str(root / "pairs" / "thermal" / f"{i}.png"), th)
        if i < 2:
            H = np.array([[1.02, 0.01, 3.0], [-0.01, 0.98, 2.0], [0, 0, 1]])
            th_w = cv2.warpPerspective(th, np.linalg.inv(H), (128, 96))
            np.savez(root / "val" / f"p{i}.npz", visible=base, thermal=th_w, H=H)
    return root
