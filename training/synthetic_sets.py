"""Validation pairs with exact ground truth made from aligned training-camera pairs.

    python -m training.synthetic_sets runs/loco/m3svd_synth --sets m3svd --pairs 40

Why: choosing a model by its score on the dev sets tunes it to them. For a leave-one-camera-out
run the held-out camera's *training* clips are warped by seeded rig-like homographies instead
(the npz format of the evaluation sets, exact ``H``), so the model is chosen on a camera it was
not trained on and the dev sets stay an independent check. ``DEV_LIKE`` matches the dev sets'
geometry (rotation up to 12 deg, scale 0.8-1.25, shift up to 8 %, mild perspective) without
photometric augmentation: the held-out camera's own look is the test.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

DEV_LIKE = {"rot_deg": 12.0, "scale": (0.8, 1.25), "shift": 0.08, "persp": 0.05, "crop_scale": (0.85, 1.0),
            "p_flip": 0.0, "photometric": False}


def make_synthetic_set(data_root: Path, sets, n: int, out_dir: Path, seed: int = 0, conf=None,
                       out_hw=(384, 512)) -> Path:
    """``n`` npz pairs (exact ``H``) drawn evenly from ``sets`` ("folder[:split]") under ``data_root``."""
    from training.augment import synth_batch
    from training.datasets import load_aligned_pairs, pairs_to_tensors, split_names
    rng = np.random.default_rng(seed)
    pairs = []
    for spec in sets:
        path, _, split = spec.partition(":")
        root = Path(data_root) / path
        names = split_names(root, split or None)
        pick = rng.choice(len(names), size=min(len(names), max(1, n // len(sets) + 1)), replace=False)
        pairs += load_aligned_pairs(root, [names[i] for i in sorted(pick)], max_side=max(out_hw) * 5 // 4)
    src_hw = (out_hw[0] * 5 // 4, out_hw[1] * 5 // 4)
    vis, th = pairs_to_tensors(pairs, hw=src_hw)
    order = torch.from_numpy(rng.permutation(len(pairs))[:n])
    b = synth_batch(vis[order], th[order], out_hw=tuple(out_hw), generator=torch.Generator().manual_seed(seed),
                    conf=conf)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for i in range(len(order)):
        np.savez(out_dir / f"synth_{i:03d}.npz",
                 visible=(b["visible"][i, 0].numpy() * 255).round().astype(np.uint8),
                 thermal=(b["thermal"][i, 0].numpy() * 255).round().astype(np.uint8),
                 H=b["H_t2v"][i].double().numpy())
    return out_dir


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--sets", default="m3svd", help="comma-separated folder[:split] list")
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--size", default="640x480", help="WxH of the pairs")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    w, h = (int(v) for v in a.size.lower().split("x"))
    out = make_synthetic_set(Path(a.data_root), a.sets.split(","), a.pairs, Path(a.out), a.seed, DEV_LIKE, (h, w))
    print(f"{a.pairs} pairs -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
