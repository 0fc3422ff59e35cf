"""Score checkpoints at the shipped working size and threshold on npz sets, in one run.

    python -m benchmarks.checkpoint_sets --sets runs/loco/m3svd_synth,runs/loco/roadscene_synth \\
        models/distillmatch_tiny.pt runs/locoA/best.pt [--json OUT]

Why: the leave-one-camera-out table compares checkpoints on the synthetic sets of
``training.synthetic_sets`` (a held-out camera's training clips), not on the dev sets.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from distillmatch_ros.checkpoint import load_checkpoint
from distillmatch_ros.evaluation import evaluate_matcher
from distillmatch_ros.matcher import Matcher
from distillmatch_ros.model import with_input_size


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--sets", required=True, help="comma-separated npz set folders")
    ap.add_argument("--size", default="416x320")
    ap.add_argument("--threshold", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    size = tuple(int(v) for v in a.size.lower().split("x"))
    out = {}
    for ck in a.checkpoints:
        model, _ = load_checkpoint(ck)
        matcher = Matcher.from_model(with_input_size(model, size), backend="torch")
        matcher.set_options(match_threshold=a.threshold)
        for s in a.sets.split(","):
            r = evaluate_matcher(matcher.match, s)
            out[f"{ck}|{s}"] = {k: round(float(r[k]), 3) for k in ("auc3", "auc5", "auc10", "prec3")}
            print(ck, s, out[f"{ck}|{s}"], flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
