"""Sweep the working size and confidence threshold of a checkpoint on the first val scenes.

    python -m benchmarks.working_size_sweep runs/tiny_cpu/best.pt --limit 10 --json out/sweep.json

Used to choose the shipped model's working size and default threshold (models/MODEL_CARD.md);
it reports AUC@5/10, precision@3 and time per pair with the evaluation protocol
(``distillmatch_ros.evaluation``).
"""
import argparse
from pathlib import Path

import torch

from benchmarks.common import DATA, write_report
from distillmatch_ros.checkpoint import load_checkpoint
from distillmatch_ros.evaluation import evaluate_matcher
from distillmatch_ros.matcher import Matcher
from distillmatch_ros.model import with_input_size


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--sizes", default="320x256,416x320,480x384")
    ap.add_argument("--thresholds", default="0.2,0.1")
    ap.add_argument("--limit", type=int, default=10)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(2)
    model, _ = load_checkpoint(a.checkpoint)
    rows = []
    for s in a.sizes.split(","):
        sized = with_input_size(model, [int(v) for v in s.split("x")])
        for thr in (float(t) for t in a.thresholds.split(",")):
            m = Matcher.from_model(sized, backend="torch", match_threshold=thr)
            row = {"size": s, "threshold": thr}
            for name in ("roadscene_homography", "roadscene_deform"):
                r = evaluate_matcher(m.match, str(Path(a.data) / name), limit=a.limit)
                row.update({f"{name}/{k}": round(r[k], 3) for k in ("auc5", "auc10", "prec3", "sec")})
            rows.append(row)
            print(row, flush=True)
    write_report(rows, a.json, show=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
