"""End-to-end latency and throughput of matcher_node over DDS on loopback, against the Matcher
call alone measured in the same run (the ROS overhead as a ratio).

    python -m benchmarks.node_latency                       # shipped model, both CPU backends
    python -m benchmarks.node_latency --model random --pairs 20 --backends onnxruntime

For each backend and thermal size (visible 1280x1024 bgr8, thermal mono16):
* ``matcher``: ``Matcher.match`` on the same images in this process (same threads);
* ``latency``: closed loop, publish a pair -> receive its ``correspondences`` (next pair only
  after the previous fused image arrived, so nothing queues);
* ``throughput``: open loop at ``--rate`` Hz; correspondences per second and pairs dropped.
The node matches every pair (rig_mode off). Fast DDS runs with config/fastdds_shm.xml.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import parse_size, write_report
from distillmatch_ros.testing.node_harness import NodeProcess, Tester, bench_model, ros_env, textured_pair, vary


def _pct(values):
    v = np.asarray(values, float)
    if v.size == 0:
        return {"p50": float("nan"), "p95": float("nan"), "n": 0}
    return {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)), "n": int(v.size)}


def matcher_alone(model, backend, threads, frames, n):
    import torch
    torch.set_num_threads(threads)
    from distillmatch_ros.matcher import Matcher
    m = Matcher(model, backend=backend)
    for k, (vis, th) in enumerate(frames):
        m.match(vis, vary(th, k))
    times = []
    for k in range(n):
        vis, th = frames[k % len(frames)]
        th = vary(th, k)
        t0 = time.perf_counter()
        m.match(vis, th)
        times.append((time.perf_counter() - t0) * 1e3)
    return _pct(times), m.backend


def node_run(tmp, model, backend, threads, frames, pairs, rate):
    node = NodeProcess(tmp, {"model": str(model), "backend": backend, "num_threads": threads,
                             "rig_mode": False, "qos_overrides": {
                                 f"/dm_bench/{t}/image_raw": {"subscription": {"reliability": "reliable"}}
                                 for t in ("visible", "thermal")}},
                       namespace="/dm_bench", name=f"node_{backend}_{frames[0][1].shape[1]}")
    tester = None
    try:
        node.wait_ready(300)
        tester = Tester("/dm_bench")
        tester.wait_connected()
        stamp = lambda m: m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec  # noqa: E731
        lat, fused_lat = [], []
        for k in range(pairs + 2):  # closed loop
            tester.take("corr")
            tester.take("fused")
            vis, th = frames[k % len(frames)]
            tester.publish_pair(vis, vary(th, k))  # stamped "now" just before publishing
            tester.wait_for(lambda: tester.peek("corr") and tester.peek("fused"), 60, "outputs")
            c = tester.take("corr")[0]
            if k >= 2:  # the first pairs warm up DDS buffers
                lat.append((tester.arrival_ns["corr"] - stamp(c)) / 1e6)
                fused_lat.append((tester.arrival_ns["fused"] - stamp(c)) / 1e6)
        time.sleep(1.5)
        diag = tester.diag_values() or {}
        breakdown = {k: float(diag.get(k, "nan")) for k in
                     ("match_latency_p50_ms", "pair_age_p50_ms", "render_latency_p50_ms")}
        # open loop at `rate` Hz for as many pairs
        tester.take("corr")
        n_open = max(pairs, int(rate * 5))
        t0 = time.perf_counter()
        base = tester.now_ns()
        for k in range(n_open):
            target = t0 + k / rate
            time.sleep(max(0.0, target - time.perf_counter()))
            vis, th = frames[k % len(frames)]
            tester.publish_pair(vis, vary(th, k + 500), base + int(k * 1e9 / rate))
        time.sleep(2.0)
        elapsed = time.perf_counter() - t0
        got = len(tester.take("corr"))
        return {"latency_ms": _pct(lat), "fused_latency_ms": _pct(fused_lat), "node_breakdown": breakdown,
                "throughput_hz": got / (elapsed - 2.0 + 1e-9), "open_loop_pairs": n_open,
                "open_loop_processed": got, "rss_mb": node.rss_mb()}
    finally:
        if tester is not None:
            tester.close()
        node.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="", help="checkpoint; empty = shipped default; 'random-tiny' = the "
                    "tiny preset with random weights (same compute); 'random' = the small test model")
    ap.add_argument("--backends", default="torch,onnxruntime")
    ap.add_argument("--thermal", default="320x256,640x512")
    ap.add_argument("--visible", default="1280x1024")
    ap.add_argument("--pairs", type=int, default=30)
    ap.add_argument("--rate", type=float, default=30.0, help="open-loop publish rate [Hz]")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="", help="write results here")
    a = ap.parse_args(argv)
    ros_env()
    tmp = Path(tempfile.mkdtemp(prefix="dm_bench_"))
    model = bench_model(a.model, tmp)
    rows = []
    for backend in a.backends.split(","):
        for tsize in a.thermal.split(","):
            # a few different frames in turn: a repeated thermal frame counts as a frozen camera
            frames = [textured_pair(i, vis_size=parse_size(a.visible), th_size=parse_size(tsize))[:2] for i in range(3)]
            alone, name = matcher_alone(model, backend, a.threads, frames, a.pairs)
            node = node_run(tmp, model, backend, a.threads, frames, a.pairs, a.rate)
            row = {"backend": name, "visible": a.visible, "thermal": tsize, "matcher_ms": alone, **node,
                   "overhead_ratio_p50": node["latency_ms"]["p50"] / alone["p50"]}
            rows.append(row)
            print(f"{name:12s} thermal {tsize:8s} matcher p50 {alone['p50']:7.1f} ms | node p50 "
                  f"{node['latency_ms']['p50']:7.1f} p95 {node['latency_ms']['p95']:7.1f} ms | ratio "
                  f"{row['overhead_ratio_p50']:.2f} | fused p50 {node['fused_latency_ms']['p50']:7.1f} ms | "
                  f"{node['throughput_hz']:.1f} Hz at {a.rate:g} Hz in | node: {node['node_breakdown']}", flush=True)
    info = {"model": str(model), "threads": a.threads, "cpu_count": os.cpu_count(), "rows": rows}
    return write_report(info, a.json, show=False)


if __name__ == "__main__":
    main()
