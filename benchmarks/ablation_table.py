"""The ablation table of models/MODEL_CARD.md: each run's best checkpoint on both val sets.

    python -m benchmarks.ablation_table runs/ablation --json runs/ablation/table.json

Every checkpoint is scored with the evaluation protocol (``distillmatch_ros.evaluation.evaluate_matcher``,
the same numbers as ../shared/tools/peer_eval.py) through ``Matcher``, at one threshold and at
the working size the runs trained at, so the rows differ only in what each run switched off.
The runs themselves come from ``training.train_matcher --ablation full|no_kd|no_v2i|no_cefg``
with one seed and one step budget (commands in models/MODEL_CARD.md).
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import DATA, write_report
from distillmatch_ros.checkpoint import load_checkpoint
from distillmatch_ros.evaluation import auc, evaluate_matcher
from distillmatch_ros.matcher import Matcher

ROWS = (("full", "full model"), ("no_kd", "without distillation (L_KD)"),
        ("no_v2i", "without V2I-GAN pseudo-infrared"), ("no_cefg", "without modality-category injection (CEFG)"))
SETS = ("roadscene_homography", "roadscene_deform")


def paired_interval(errs_a, errs_b, t: float = 10.0, n: int = 2000, seed: int = 0):
    """95 % bootstrap interval of AUC@t(a) - AUC@t(b), resampling the same scenes for both runs:
    with 20 scenes per set the run-to-run spread is the first thing a reader needs to know."""
    a, b = np.asarray(errs_a), np.asarray(errs_b)
    rng = np.random.default_rng(seed)
    diffs = [auc(a[i], t) - auc(b[i], t) for i in (rng.integers(0, len(a), len(a)) for _ in range(n))]
    return float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", help="folder holding full/, no_kd/, no_v2i/, no_cefg/ (each with best.pt)")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--threshold", type=float, default=0.1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(2)
    for name in SETS:
        if not (Path(a.data) / name).is_dir():
            raise SystemExit(f"{Path(a.data) / name} not found: the ablation is scored on the val sets of "
                             "../shared/data (set --data)")
    table, errs = {}, {}
    for key, label in ROWS:
        ckpt = Path(a.runs) / key / "best.pt"
        if not ckpt.exists():
            print(f"skipping {key}: {ckpt} missing", file=sys.stderr)
            continue
        model, card = load_checkpoint(ckpt)
        m = Matcher.from_model(model, backend="torch", card=card, match_threshold=a.threshold)
        row = {"label": label, "step": card.get("step"), "train_seconds": card.get("train_seconds")}
        for s in SETS:
            r = evaluate_matcher(m.match, str(Path(a.data) / s))
            row[s] = {k: round(float(r[k]), 3) for k in ("auc3", "auc5", "auc10", "prec3", "ncm")}
            errs[(key, s)] = [x["err"] for x in r["rows"]]
        table[key] = row
        print(key, json.dumps(row), flush=True)
    print("\n| variant | steps | homography AUC@3/5/10 | homography prec@3 | deform AUC@3/5/10 | deform prec@3 |")
    print("|---|---|---|---|---|---|")
    for row in table.values():
        h, d = row[SETS[0]], row[SETS[1]]
        print(f"| {row['label']} | {row['step']} | {h['auc3']:.3f} / {h['auc5']:.3f} / {h['auc10']:.3f} | "
              f"{h['prec3']:.3f} | {d['auc3']:.3f} / {d['auc5']:.3f} / {d['auc10']:.3f} | {d['prec3']:.3f} |")
    if "full" in table:
        print("\nAUC@10 of the full model minus each variant, 95 % paired bootstrap interval over the scenes:")
        for key in table:
            if key == "full":
                continue
            for s in SETS:
                lo, hi = paired_interval(errs[("full", s)], errs[(key, s)])
                d = table["full"][s]["auc10"] - table[key][s]["auc10"]
                table[key][s]["full_minus_this_auc10"] = {"diff": round(d, 3), "ci95": [round(lo, 3), round(hi, 3)]}
                print(f"  {key:8s} {s:22s} {d:+.3f}  [{lo:+.3f}, {hi:+.3f}]")
    write_report(table, a.json, show=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
