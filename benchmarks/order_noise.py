"""How much of a dev-set AUC is the order of the returned matches: the protocol's MAGSAC fit
(``evaluation.evaluate_pair``) on the same matches in the matcher's order and in random orders.

    python -m benchmarks.order_noise --sets roadscene_homography,m3svd_homography --shuffles 10 \
        [--single] --json runs/bench/order_noise.json

Why: USAC_MAGSAC samples depend on the input order, so a change that only reorders matches with
near-equal scores (a different float rounding) moves AUC@10 by a few hundredths with the same
matches. Compare two versions by the spread over orders, not by one order.
"""
from __future__ import annotations

import argparse
import glob
import os

import numpy as np

from benchmarks.common import DATA, machine_stamp, write_report


def auc10(pairs, order) -> float:
    """AUC@10 of (truth, visible points, thermal points) pairs with each pair's matches in ``order``."""
    from distillmatch_ros import evaluation
    rows = [evaluation.evaluate_pair(gt, kv[o], kt[o]) for (gt, kv, kt), o in zip(pairs, order, strict=True)]
    return evaluation.summarize(rows)["auc10"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", default="roadscene_homography,m3svd_homography")
    ap.add_argument("--shuffles", type=int, default=10)
    ap.add_argument("--single", action="store_true", help="one full-size pass (guided_pass off)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    from distillmatch_ros import evaluation
    from distillmatch_ros.matcher import Matcher
    m = Matcher.from_pretrained(guided_pass=not args.single)
    rng = np.random.default_rng(args.seed)
    out = {**machine_stamp(), "passes": 1 if args.single else 2, "sets": {}}
    for s in args.sets.split(","):
        files = sorted(glob.glob(os.path.join(str(DATA), s, "*.npz")))
        if not files:
            print(f"{s}: no pairs under {DATA} (skipped)")
            continue
        pairs = []
        for f in files:
            gt = evaluation.load_pair_npz(f)
            r = m.match(gt["visible"], gt["thermal"])
            pairs.append((gt, np.asarray(r.visible_points, np.float64), np.asarray(r.thermal_points, np.float64)))

        given = auc10(pairs, [np.arange(len(kv)) for _, kv, _ in pairs])
        shuffled = [auc10(pairs, [rng.permutation(len(kv)) for _, kv, _ in pairs]) for _ in range(args.shuffles)]
        out["sets"][s] = {"auc10_given_order": given, "auc10_shuffled_mean": float(np.mean(shuffled)),
                          "auc10_shuffled_sd": float(np.std(shuffled)), "auc10_shuffled_min": float(min(shuffled)),
                          "auc10_shuffled_max": float(max(shuffled))}
        print(f"{s:22s} AUC@10 in the matcher's order {given:.3f}; over {args.shuffles} random orders "
              f"{np.mean(shuffled):.3f} +- {np.std(shuffled):.3f} ({min(shuffled):.3f}-{max(shuffled):.3f})",
              flush=True)
    write_report(out, args.json, show=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
