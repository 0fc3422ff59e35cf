"""Network time of exported graphs, timed in strict alternation in one process on one input.

    python -m benchmarks.graph_alternation \
        whole=~/.cache/distillmatch_ros/distillmatch-<hash>-416x320-op17-g5-ov.int8-...xml \
        band=~/.cache/distillmatch_ros/distillmatch-<hash>-416x320-op17-g5-ov.int8-...xml --reps 40

Each argument is ``name=path`` of an OpenVINO IR (``.xml``) or ONNX file from the cache, so
graphs built by different checkouts (a worktree of the commit before a change) compare in one
process: on this shared 2-core machine the host's speed moves by 1.3x within minutes, and
graphs timed in separate processes or minutes apart gave contradicting ratios. The order
alternates every round; the figure to use is the median of the per-round ratios to the first
graph. Compiled as the OpenVINO backend compiles (backends.openvino_settings).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine_stamp, write_report
from distillmatch_ros.backends import openvino_settings


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("graphs", nargs="+", help="name=path of an OpenVINO IR or ONNX graph (first: the reference)")
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    import openvino as ov
    core = ov.Core()
    names, requests, sizes = [], [], []
    for item in a.graphs:
        name, eq, path = item.partition("=")
        if not eq or not Path(path).expanduser().is_file():
            raise SystemExit(f"{item!r}: expected name=path of an existing graph file")
        compiled = core.compile_model(core.read_model(str(Path(path).expanduser())), "CPU",
                                      openvino_settings(a.threads))
        shape = tuple(compiled.input("visible").get_shape())
        names.append(name)
        requests.append(compiled.create_infer_request())
        sizes.append(shape)
    if len(set(sizes)) != 1:
        raise SystemExit(f"the graphs take different inputs: {dict(zip(names, sizes, strict=True))}")
    rng = np.random.default_rng(0)
    feed = {"visible": rng.random(sizes[0], dtype=np.float32), "thermal": rng.random(sizes[0], dtype=np.float32)}
    for r in requests:
        for _ in range(3):
            r.infer(feed)
    times = np.zeros((a.reps, len(requests)))
    for i in range(a.reps):
        order = range(len(requests)) if i % 2 == 0 else reversed(range(len(requests)))
        for k in order:
            t0 = time.perf_counter()
            requests[k].infer(feed)
            times[i, k] = time.perf_counter() - t0
    report = {**machine_stamp(a.threads), "input": list(sizes[0]), "reps": a.reps,
              "median_ms": {n: round(float(np.median(times[:, k])) * 1e3, 1) for k, n in enumerate(names)},
              "median_ratio_to_first": {n: round(float(np.median(times[:, k] / times[:, 0])), 3)
                                        for k, n in enumerate(names)}}
    print(json.dumps({k: report[k] for k in ("median_ms", "median_ratio_to_first")}))
    write_report(report, a.json, show=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
