"""Sweep the working size and confidence threshold of checkpoints on the first scenes of npz sets.

    python -m benchmarks.working_size_sweep runs/tiny_cpu/best.pt --limit 10 --json out/sweep.json
    # checkpoints side by side on a held-out camera's synthetic pairs (training.synthetic_sets)
    python -m benchmarks.working_size_sweep models/distillmatch_tiny.pt runs/locoA/best.pt \
        --sizes 416x320 --thresholds 0.1 --limit 40 --sets runs/loco/m3svd_synth,runs/loco/roadscene_synth
    # the shipped model at smaller working sizes on the dev sets, on the CPU path auto takes
    python -m benchmarks.working_size_sweep models/distillmatch_tiny.pt --sizes 416x320,352x272,320x256 \
        --thresholds 0.1 --limit 24 --backend openvino_int8 \
        --sets roadscene_homography,m3svd_homography,roadscene_deform

Used to choose the shipped model's working size and default threshold (models/MODEL_CARD.md);
it reports AUC@5/10, precision@3 and time per pair with the evaluation protocol
(``distillmatch_ros.evaluation``).
"""
import argparse

import torch

from benchmarks.common import DATA, scores_on_sets, write_report
from distillmatch_ros.checkpoint import load_checkpoint
from distillmatch_ros.matcher import Matcher
from distillmatch_ros.model import with_input_size


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--sets", default="roadscene_homography,roadscene_deform",
                    help="comma-separated npz sets: names under --data, or folders")
    ap.add_argument("--sizes", default="320x256,416x320,480x384")
    ap.add_argument("--thresholds", default="0.2,0.1")
    ap.add_argument("--limit", type=int, default=10)
    ap.add_argument("--passes", default="3", help="1: one full-size pass; 2: the rough and one guided pass; "
                    "3: the rough pass and guided passes until converged, at most 2 (the matcher's default); "
                    "e.g. 1,2,3 for all")
    ap.add_argument("--backend", default="torch", help="the matcher's backend (e.g. openvino_int8: what "
                    "auto runs on this machine; an INT8 model is built once per size)")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    for ck in a.checkpoints:
        model, _ = load_checkpoint(ck)
        for s in a.sizes.split(","):
            sized = with_input_size(model, [int(v) for v in s.split("x")])
            for thr in (float(t) for t in a.thresholds.split(",")):
                for passes in (int(p) for p in a.passes.split(",")):
                    m = Matcher.from_model(sized, backend=a.backend, match_threshold=thr, guided_pass=passes > 1,
                                           guided_passes=max(1, passes - 1))
                    row = {"checkpoint": ck, "size": s, "threshold": thr, "passes": passes,
                           **scores_on_sets(m.match, a.sets, a.data, a.limit)}
                    rows.append(row)
                    print(row, flush=True)
    write_report(rows, a.json, show=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
