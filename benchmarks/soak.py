"""Soak test: camera pairs at a fixed rate into matcher_node for minutes; watch memory and counters.

    python -m benchmarks.soak --minutes 10                 # 30 Hz, 1280x1024 + 640x512, shipped model
    python -m benchmarks.soak --minutes 0.3 --model random --visible 320x256 --thermal 160x128

Reports RSS over time (growth after warm-up: median of the last quarter of samples over the
median of the first quarter after warm-up, min(60 s, 20 %) of the run), the node's counters (checks received =
processed + dropped exactly, per stream received = paired + dropped + queued), latency
percentiles (pair stamp -> correspondences received), output rates and errors. Exit code 0 when
the node survived, the counters add up and RSS grew less than --max-rss-growth after warm-up.
The node runs config/matcher.yaml (rig mode: fuse every pair, re-match at match_rate_hz).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import parse_size, write_report
from distillmatch_ros.testing.node_harness import NodeProcess, Tester, bench_model, ros_env, textured_pair, vary


def _num(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        try:
            return float(v)
        except (TypeError, ValueError):
            return v


def run(a) -> dict:
    ros_env()
    tmp = Path(tempfile.mkdtemp(prefix="dm_soak_"))
    model = bench_model(a.model, tmp)
    params = {"model": str(model), "backend": a.backend, "num_threads": a.threads, "diagnostics_period": 1.0}
    if a.per_pair:
        params["rig_mode"] = False
    frames = [textured_pair(i, vis_size=parse_size(a.visible), th_size=parse_size(a.thermal))[:2] for i in range(5)]
    node = NodeProcess(tmp, params, namespace="/dm_soak", name="soak_node")
    tester = None
    rss, latencies, outputs = [], [], 0
    try:
        node.wait_ready(300)
        tester = Tester("/dm_soak", reliable=False)  # cameras publish best effort
        tester.wait_connected()
        duration = a.minutes * 60.0
        warmup = min(60.0, 0.2 * duration)
        t0 = time.perf_counter()
        next_sample, k = 0.0, 0
        while True:
            now = time.perf_counter() - t0
            if now >= duration or not node.alive():
                break
            if now >= next_sample:
                rss.append((round(now, 1), round(node.rss_mb(), 1)))
                next_sample += a.sample_every
            vis, th = frames[k % len(frames)]
            tester.publish_pair(vis, vary(th, k))
            k += 1
            for c in tester.take("corr"):
                outputs += 1
                stamp_ns = c.header.stamp.sec * 10**9 + c.header.stamp.nanosec
                latencies.append((tester.arrival_ns["corr"] - stamp_ns) / 1e6)
            time.sleep(max(0.0, t0 + k / a.rate - time.perf_counter()))
        published = k
        alive = node.alive()
        time.sleep(3.0)  # let the last pair finish and diagnostics catch up
        outputs += len(tester.take("corr"))
        diag = {}
        if alive:
            t_diag = tester.now_ns()
            tester.wait_for(lambda: tester.diag_values(t_diag) is not None, 10, "final diagnostics")
            diag = {key: _num(v) for key, v in tester.diag_values(t_diag).items()}
        if alive:
            rss.append((round(time.perf_counter() - t0, 1), round(node.rss_mb(), 1)))
    finally:
        if tester is not None:
            tester.close()
        code = node.stop()
    log = node.log()
    # Steady-state growth: median of the last quarter of samples over the median of the first
    # quarter after warm-up (single samples swing by a few full-size image buffers).
    after_warm = [r for t, r in rss if t >= warmup] or [r for _, r in rss]
    q = max(1, len(after_warm) // 4)
    growth = ((float(np.median(after_warm[-q:])) - float(np.median(after_warm[:q]))) / float(np.median(after_warm[:q]))
              * 100) if after_warm else float("nan")
    counters_ok = bool(diag) and diag.get("pairs_received") == (
        diag.get("pairs_processed", 0) + diag.get("pairs_dropped", 0) + diag.get("pairs_waiting", 0)
        + diag.get("pairs_in_progress", 0))
    for s in ("visible", "thermal"):
        dropped = sum(v for key, v in diag.items() if key.startswith(f"{s}_sync_dropped_"))
        counters_ok = counters_ok and diag.get(f"{s}_received") == diag.get("pairs_received", -1) + dropped + \
            diag.get(f"{s}_queued", 0)
    lat = np.asarray(latencies, float)
    result = {
        "minutes": a.minutes, "rate_hz": a.rate, "visible": a.visible, "thermal": a.thermal, "model": str(model),
        "backend": diag.get("backend"), "published_pairs": published, "correspondences_received": outputs,
        "node_alive_at_end": alive, "exit_code_on_sigint": code,
        "rss_mb": rss, "rss_growth_after_warmup_pct": round(growth, 2),
        "rss_max_after_warmup_mb": max(after_warm) if after_warm else None,
        "latency_ms": {"p50": float(np.percentile(lat, 50)) if lat.size else None,
                       "p95": float(np.percentile(lat, 95)) if lat.size else None,
                       "max": float(lat.max()) if lat.size else None},
        "counters": {k: diag.get(k) for k in ("pairs_received", "pairs_processed", "pairs_dropped",
                                              "pairs_failed", "pairs_waiting", "pairs_in_progress",
                                              "matched_pairs", "visible_received", "thermal_received",
                                              "visible_rejected", "thermal_rejected")},
        "counters_exact": counters_ok,
        "errors": {"pairs_failed": diag.get("pairs_failed"),
                   "processing_failed_log_lines": log.count("processing failed"),
                   "tracebacks": log.count("Traceback")},
    }
    result["ok"] = bool(alive and code == 0 and counters_ok and growth < a.max_rss_growth
                        and not result["errors"]["tracebacks"] and not diag.get("pairs_failed"))
    return result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--visible", default="1280x1024")
    ap.add_argument("--thermal", default="640x512")
    ap.add_argument("--model", default="", help="checkpoint; empty = shipped default; 'random-tiny' = the "
                    "tiny preset with random weights (same compute); 'random' = the small test model")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--per-pair", action="store_true", help="match every pair (rig_mode off)")
    ap.add_argument("--sample-every", type=float, default=5.0, help="RSS sample period [s]")
    ap.add_argument("--max-rss-growth", type=float, default=5.0, help="allowed RSS growth after warm-up [%%]")
    ap.add_argument("--json", default="")
    a = ap.parse_args(argv)
    return write_report(run(a), a.json, show=_summary)


def _summary(result: dict) -> None:
    """The report without its RSS series (a sample every few seconds), then the series' ends."""
    print(json.dumps({k: v for k, v in result.items() if k != "rss_mb"}, indent=1))
    print("RSS [s, MB]:", result["rss_mb"][:3], "...", result["rss_mb"][-3:])


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
