"""The demo's replay latency (p50/p95 through the node's pipeline) of this checkout against the
default of another one, in turns, in one run.

    python -m benchmarks.replay_latency --baseline-root <worktree of the previous commit> --rounds 3 \
        --json runs/bench/replay_latency.json

The demo's recording is made once (``distillmatch demo``'s bundled photos and V2I-GAN, written by
this checkout); then each round replays it with ``distillmatch bag-eval`` as the demo does (rig
mode, every pair re-matched, default backend and options) with this checkout, then with the
baseline's, each a fresh process (``PYTHONPATH`` = its root), so a drifting machine load hits both
alike. Reports per variant and round the latency p50/p95 and the per-pair AUC@10 from each
replay's report.json, and the medians over rounds.

Each checkout has its own cache folder (``DISTILLMATCH_CACHE``), set up before the rounds by its
own setup step (``--setup``, ``--baseline-setup``: what its ``scripts/setup_env.sh`` runs for
``backend=auto``): the record of the measured CPU choice is keyed by the model, not by the
checkout, and one checkout's record may name a backend the other does not have.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import write_report

ROOT = Path(__file__).resolve().parents[1]


def checkout_env(root: Path, cache: Path, threads: int) -> dict:
    return dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS=str(threads), DISTILLMATCH_CACHE=str(cache))


def replay(root: Path, cache: Path, recording: Path, gt: Path, report: Path, threads: int) -> dict:
    """One ``bag-eval`` of ``recording`` by the checkout at ``root``; its report.json summary."""
    env = checkout_env(root, cache, threads)
    cmd = [sys.executable, "-m", "distillmatch_ros.cli", "bag-eval", str(recording), "--gt-homography", str(gt),
           "--report", str(report), "--rig-mode", "on", "--match-rate", "0", "--no-progress"]
    subprocess.run(cmd, cwd=root, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads((report / "report.json").read_text())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline-root", required=True, help="checkout whose default is the baseline")
    ap.add_argument("--setup", default="python -m distillmatch_ros.cpu_prepare",
                    help="this checkout's backend=auto set-up, run once in its own cache")
    ap.add_argument("--baseline-setup", default="python -c 'from distillmatch_ros.matcher import Matcher; "
                    "Matcher.from_pretrained()'", help="the baseline's, likewise")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="", help="folder for the recording and reports (default: a temporary one)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    work = Path(a.work or tempfile.mkdtemp(prefix="replay_latency_"))
    demo = work / "demo"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # The recording and its ground truth, as the demo writes them (its own replay is not counted).
    subprocess.run([sys.executable, "-m", "distillmatch_ros.cli", "demo", "--out", str(demo)], cwd=ROOT, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    recording, gt = demo / "recording", demo / "gt_homography.json"
    roots = {"this checkout": ROOT, "baseline": Path(a.baseline_root).resolve()}
    setups = {"this checkout": a.setup, "baseline": a.baseline_setup}
    caches = {name: work / f"cache_{name.replace(' ', '_')}" for name in roots}
    for name, root in roots.items():
        command = setups[name].replace("python ", f"{sys.executable} ", 1)
        print(f"{name}: {setups[name]}", flush=True)
        subprocess.run(command, shell=True, cwd=root, env=checkout_env(root, caches[name], a.threads), check=True,
                       stdout=subprocess.DEVNULL)
    rows = {name: [] for name in roots}
    for k in range(a.rounds):
        for name, root in roots.items():
            s = replay(root, caches[name], recording, gt, work / f"{name.replace(' ', '_')}_{k}", a.threads)
            row = {"p50": s["latency_ms"]["p50"], "p95": s["latency_ms"]["p95"], "auc10": s["auc"]["10"],
                   "pairs": s["pairs_evaluated"]}
            rows[name].append(row)
            print(f"round {k}: {name:14s} latency p50 {row['p50']:.0f} ms p95 {row['p95']:.0f} ms, "
                  f"per-pair AUC@10 {row['auc10']:.3f} ({row['pairs']} pairs)", flush=True)
    summary = {name: {key: statistics.median(r[key] for r in v) for key in ("p50", "p95", "auc10")}
               for name, v in rows.items()}
    base = summary["baseline"]
    for name, s in summary.items():
        print(f"{name:14s} median over {a.rounds} rounds: p50 {s['p50']:.0f} ms ({s['p50'] / base['p50']:.2f}x "
              f"baseline), p95 {s['p95']:.0f} ms ({s['p95'] / base['p95']:.2f}x), AUC@10 {s['auc10']:.3f}")
    write_report({"baseline_root": str(roots["baseline"]), "rounds": rows, "summary": summary}, a.json, show=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
