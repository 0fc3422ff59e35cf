"""Datasets of visible/thermal pairs for training and validation.

Why: every training tool (V2I-GAN, matcher training, distillation) reads the same two on-disk
layouts, so the readers live in one place:

* aligned pair folders: ``<root>/visible/<name>`` + ``<root>/thermal/<name>`` (same pixel grid
  within a pair, e.g. ``../shared/data/roadscene`` and ``tno``); optional ``<root>/split.json``
  with ``{"train": [...], "val": [...]}``;
* the npz ground-truth format of the shared evaluation sets: ``visible`` (HxWx3 BGR or HxW uint8), ``thermal``
  (HxW uint8 or uint16) and either ``H`` (3x3 thermal -> visible) or ``grid`` (HtxWtx2).

API used by the lead's GPU training (no CPU data loader needed there)::

    names = split_names(root, "train")                      # list[str] (all files if no split.json)
    pairs = load_aligned_pairs(root, names, max_side=640)   # list[(vis_bgr uint8 HxWx3, th uint8 HxW)]
    vis, th = pairs_to_tensors(pairs, hw=(256, 320), device="cuda")
    # -> vis float [N,3,H,W] (BGR, 0..1), th float [N,1,H,W] (0..1), resized to a common size,
    #    ready for training.augment.synth_batch

``PairCropDataset`` yields random aligned crops (for the V2I-GAN, identity geometry).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def default_data_root() -> Path:
    """``<repo>/../shared/data``: where the development data lives (absent in a user's clone)."""
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def split_names(root, split: Optional[str] = None) -> List[str]:
    """File names of one split (``split.json``) or, without a split, every visible image."""
    root = Path(root)
    sj = root / "split.json"
    if split is not None and sj.exists():
        with open(sj) as f:
            return list(json.load(f)[split])
    if split not in (None, "train") and not sj.exists():
        raise FileNotFoundError(f"{root} has no split.json, cannot select split {split!r}")
    return sorted(p.name for p in (root / "visible").iterdir() if p.suffix.lower() in IMAGE_EXTS)


def _to_u8(img: np.ndarray) -> np.ndarray:
    """16-bit thermal -> 8 bit by robust percentiles (never plain min/max, which flickers)."""
    if img.dtype == np.uint8:
        return img
    f = img.astype(np.float32)
    lo, hi = np.percentile(f, (1.0, 99.0))
    return np.clip((f - lo) * 255.0 / max(hi - lo, 1e-6), 0, 255).astype(np.uint8)


def _resize_max_side(img: np.ndarray, max_side: Optional[int]) -> np.ndarray:
    if not max_side:
        return img
    h, w = img.shape[:2]
    s = max_side / max(h, w)
    if s >= 1.0:
        return img
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def load_aligned_pairs(root, names: Optional[Sequence[str]] = None,
                       max_side: Optional[int] = None) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Read aligned pairs ``(vis_bgr uint8 HxWx3, th uint8 HxW)`` from a pair folder.

    Both images of a pair are resized to the visible image's size (after an optional
    ``max_side`` downscale), since aligned pairs share one pixel grid.
    """
    root = Path(root)
    if names is None:
        names = split_names(root)
    out = []
    for n in names:
        vp, tp = root / "visible" / n, root / "thermal" / n
        vis = cv2.imread(str(vp), cv2.IMREAD_COLOR)
        th = cv2.imread(str(tp), cv2.IMREAD_UNCHANGED)
        if vis is None or th is None:
            raise FileNotFoundError(f"cannot read pair {n!r} under {root} ({vp}, {tp})")
        if th.ndim == 3:
            th = cv2.cvtColor(th, cv2.COLOR_BGR2GRAY)
        th = _to_u8(th)
        vis = _resize_max_side(vis, max_side)
        if th.shape[:2] != vis.shape[:2]:
            th = cv2.resize(th, (vis.shape[1], vis.shape[0]), interpolation=cv2.INTER_AREA)
        out.append((vis, th))
    return out


def load_npz_pair(path) -> dict:
    """One npz GT pair -> dict(visible, thermal, H or grid) with thermal converted to uint8."""
    with np.load(str(path)) as z:
        d = {k: z[k] for k in z.files}
    if "visible" not in d or "thermal" not in d:
        raise KeyError(f"{path}: npz pair needs 'visible' and 'thermal' arrays")
    if "H" not in d and "grid" not in d:
        raise KeyError(f"{path}: npz pair needs ground truth 'H' or 'grid'")
    d["thermal"] = _to_u8(d["thermal"])
    return d


def pairs_to_tensors(pairs, hw: Tuple[int, int], device="cpu"):
    """Resize every aligned pair to ``hw`` (H, W) and stack: vis [N,3,H,W] BGR 0..1, th [N,1,H,W]."""
    H, W = hw
    vs, ts = [], []
    for vis, th in pairs:
        if vis.ndim == 2:
            vis = cv2.cvtColor(vis, cv2.COLOR_GRAY2BGR)
        vs.append(cv2.resize(vis, (W, H), interpolation=cv2.INTER_AREA))
        ts.append(cv2.resize(th, (W, H), interpolation=cv2.INTER_AREA))
    v = torch.from_numpy(np.stack(vs)).permute(0, 3, 1, 2).float().div_(255.0)
    t = torch.from_numpy(np.stack(ts))[:, None].float().div_(255.0)
    return v.to(device), t.to(device)


class PairCropDataset(torch.utils.data.Dataset):
    """Random aligned crops of in-memory pairs (identity geometry), with scale jitter and flips.

    Why: the V2I-GAN learns a per-pixel translation, so it needs many small aligned crops rather
    than whole frames; holding the few hundred pairs in memory keeps a 1-thread CPU run fast.
    """

    def __init__(self, pairs, crop: int = 160, scale=(0.6, 1.0), length: int = 10**7, seed: int = 0):
        self.pairs, self.crop, self.scale, self.length = pairs, crop, scale, length
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        vis, th = self.pairs[self.rng.integers(len(self.pairs))]
        h, w = th.shape
        s = self.rng.uniform(*self.scale)
        side = int(min(h, w) * s)
        side = max(min(side, h, w), 8)
        y = self.rng.integers(0, h - side + 1)
        x = self.rng.integers(0, w - side + 1)
        v = cv2.resize(vis[y:y + side, x:x + side], (self.crop, self.crop), interpolation=cv2.INTER_AREA)
        t = cv2.resize(th[y:y + side, x:x + side], (self.crop, self.crop), interpolation=cv2.INTER_AREA)
        if self.rng.random() < 0.5:
            v, t = v[:, ::-1], t[:, ::-1]
        v = torch.from_numpy(np.ascontiguousarray(v)).permute(2, 0, 1).float() / 255.0
        t = torch.from_numpy(np.ascontiguousarray(t))[None].float() / 255.0
        return v, t


def device_crop_batch(vis: torch.Tensor, th: torch.Tensor, n: int, crop: int, scale=(0.35, 0.85),
                      generator: Optional[torch.Generator] = None):
    """``n`` random aligned square crops (scale jitter, flips) of pairs held on the device.

    Why: on a GPU the per-sample OpenCV crops of ``PairCropDataset`` starve the model; here one
    ``grid_sample`` call cuts the whole batch. ``vis`` [N,3,H,W], ``th`` [N,1,H,W] (0..1, from
    ``pairs_to_tensors``); returns ([n,3,crop,crop], [n,1,crop,crop]).
    """
    import torch.nn.functional as F
    N, _, H, W = vis.shape
    g = generator
    idx = torch.randint(N, (n,), generator=g)
    side = torch.empty(n).uniform_(*scale, generator=g) * min(H, W)    # crop side in source pixels
    cx = torch.rand(n, generator=g) * (W - side) + side / 2
    cy = torch.rand(n, generator=g) * (H - side) + side / 2
    flip = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = side / W * flip
    theta[:, 1, 1] = side / H
    theta[:, 0, 2] = 2 * cx / W - 1
    theta[:, 1, 2] = 2 * cy / H - 1
    grid = F.affine_grid(theta.to(vis.device), (n, 1, crop, crop), align_corners=False)
    idx = idx.to(vis.device)
    return (F.grid_sample(vis[idx], grid, mode="bilinear", align_corners=False),
            F.grid_sample(th[idx], grid, mode="bilinear", align_corners=False))
