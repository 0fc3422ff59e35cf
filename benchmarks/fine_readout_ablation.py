"""What each part of the window fine stage contributes, on synthetic pairs of the training cameras.

    python -m benchmarks.fine_readout_ablation --sets runs/loco/m3svd_synth,runs/loco/roadscene_synth \
        --limit 40 --json runs/bench/fine_readout_ablation.json

Runs the shipped matcher (PyTorch, its default guided passes) with parts of the fine stage
switched off at inference: the 1/2 window's position (``no_fine2``: the 1/4 estimate goes on to
the sub-pixel MLP), the sub-pixel MLP (``no_subpixel``), both, or the 1/2 window read by a
soft-argmax over the whole window (``soft_fine2``). No weights change; each variant loads the
checkpoint afresh. Reports AUC@5/10, precision@3 and time per pair (evaluation.py's protocol).
Choose on these synthetic pairs (training.synthetic_sets), not on the dev sets.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks.common import DATA, scores_on_sets, write_report
from distillmatch_ros.checkpoint import load_checkpoint
from distillmatch_ros.matcher import Matcher, resolve_model

VARIANTS = ("shipped", "no_fine2", "no_subpixel", "no_fine2+no_subpixel", "soft_fine2")


def ablated(checkpoint: str, variant: str):
    """The checkpoint's model with ``variant``'s parts switched off (``+`` joins several)."""
    model, _ = load_checkpoint(checkpoint)
    if model.cross_fine is not None:
        raise SystemExit("the ablation is written for the window fine stage (fine_stage='window')")
    parts = set(variant.split("+")) - {"shipped"}
    unknown = parts - {"no_fine2", "no_subpixel", "soft_fine2"}
    if unknown:
        raise SystemExit(f"unknown variant part(s) {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    if "no_fine2" in parts:
        fine2 = model.fine2.forward

        def keep_fine4(fv, ft, pv, pt, size_wh):  # the 1/2 window's logits, the 1/4 position
            logits, _, win = fine2(fv, ft, pv, pt, size_wh)
            return logits, pt, win
        model.fine2.forward = keep_fine4
    if "no_subpixel" in parts:
        model.refine.forward = lambda fv, ft, pv, pt, logits, size_wh: (pv, pt)
    if "soft_fine2" in parts:
        model.fine2.local = False
    return model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(resolve_model()))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--sets", default="runs/loco/m3svd_synth,runs/loco/roadscene_synth",
                    help="npz set folders, or names under --data")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = []
    for variant in a.variants.split(","):
        m = Matcher.from_model(ablated(a.checkpoint, variant), backend="torch")
        row = {"variant": variant, **scores_on_sets(m.match, a.sets, a.data, a.limit, label=lambda n: Path(n).name)}
        rows.append(row)
        print(row, flush=True)
    write_report(rows, a.json, show=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
