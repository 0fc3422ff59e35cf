"""Choose how a trained model's fine windows turn their logits into a position, on training data.

    python -m training.calibrate_fine models/distillmatch_tiny.pt --out calibrated.pt [--pairs 24]

The window temperatures are learned by a classification loss, which rewards a calibrated
probability, not an unbiased position: the soft-argmax over a whole window of a soft
distribution is pulled towards the window centre (on the 2026-11-26 model the estimated offset
from the coarse cell centre was about 0.25x the true one). That pull follows the 1/8 grid across
the image, so it does not average out in a homography fit. This tool scores a small grid of
read-outs, soft-argmax over the whole window or around its argmax (``fine_expectation``) times
a temperature multiplier, on *synthetic pairs made from the training sets* (aligned pairs
warped by random rig homographies, the training augmentation; never the dev sets), with the
evaluation protocol (distillmatch_ros/evaluation.py), and writes the best one into a copy of the checkpoint.
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import torch

from distillmatch_ros.checkpoint import load_checkpoint, save_checkpoint
from distillmatch_ros.evaluation import evaluate_matcher
from distillmatch_ros.matcher import Matcher
from training.synthetic_sets import make_synthetic_set

REPO = Path(__file__).resolve().parents[1]
CANDIDATES = "soft:1,soft:2,soft:3,local:1,local:2"


def fine_levels(model):
    if model.cross_fine is not None:
        return [model.cross_fine.level4, model.cross_fine.level2]
    return [model.fine4, model.fine2]


def apply_readout(model, expectation: str, mult: float, base_scales) -> None:
    for level, base in zip(fine_levels(model), base_scales, strict=True):
        level.local = expectation == "local"
        level.log_scale.data = base + math.log(mult)
    model.config["fine_expectation"] = expectation


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--out", required=True, help="the calibrated checkpoint")
    ap.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--train-sets", default="roadscene:train,tno,m3svd")
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--candidates", default=CANDIDATES,
                    help="read-outs to score: expectation:temperature multiplier, ...")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="write every candidate's scores here")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    model, card = load_checkpoint(a.checkpoint)
    base_scales = [lv.log_scale.data.clone() for lv in fine_levels(model)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sdir = make_synthetic_set(Path(a.data_root), a.train_sets.split(","), a.pairs, Path(tmp) / "synth")
        matcher = Matcher.from_model(model, backend="torch")
        for item in a.candidates.split(","):
            expectation, mult = item.split(":")[0], float(item.split(":")[1])
            apply_readout(model, expectation, mult, base_scales)
            s = evaluate_matcher(matcher.match, str(sdir))
            score = (s["auc5"] + s["auc10"]) / 2
            rows.append({"fine_expectation": expectation, "temperature_mult": mult, "score": score,
                         **{k: float(s[k]) for k in ("auc3", "auc5", "auc10", "prec3")}})
            print(json.dumps(rows[-1]), flush=True)
    best = max(rows, key=lambda r: r["score"])
    apply_readout(model, best["fine_expectation"], best["temperature_mult"], base_scales)
    card = dict(card, fine_readout={"chosen": best, "candidates": rows, "pairs": a.pairs,
                                    "train_sets": a.train_sets, "from": str(a.checkpoint)})
    save_checkpoint(a.out, model, card, half=True)
    print(f"chose {best['fine_expectation']} x{best['temperature_mult']} -> {a.out}")
    if a.json:
        Path(a.json).write_text(json.dumps({"chosen": best, "candidates": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
