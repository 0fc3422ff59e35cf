"""Where the time of one pair goes, stage by stage, on each inference path.

    python -m benchmarks.stage_profile --backends torch,onnxruntime,openvino --json runs/stage_profile.json
    python -m benchmarks.stage_profile --bag demo_out/recording     # the demo's replay (rig mode)

Pairs: the dev sets' npz pairs (visible as ``bgr8`` messages, thermal as ``mono16``: what a real
rig sends), or with ``--bag`` the synchronized pairs of a recording, processed as the demo does
(rig mode, re-matching every pair). Per pair and backend, after a warm-up, the medians of:

* ``decode``: :func:`~distillmatch_ros.image_codec.decode_pair` of the two messages;
* ``preprocess``: validation, thermal normalisation, resize, structure maps (``Matcher.match``'s
  own ``preprocess`` timing); ``network``: the backend call; ``ransac_verify``: thresholds,
  USAC_MAGSAC and verification (its ``homography`` timing);
* ``alignment``: the rest of ``PairPipeline.step`` (thermal checks, pooled fit in rig mode);
* ``fusion``: ``PairPipeline.render``; ``publish``: filling the Correspondences fields and the
  fused Image message (what the node does before handing them to DDS).

The network time is split into ``trunk`` (texture CNN, semantic student, CEFG, STFA), ``coarse``
(the coarse attention layers, dual softmax and selection) and ``fine`` (coarse-to-fine injection,
the 1/4 and 1/2 windows and the sub-pixel head) in a second, instrumented pass: ONNX Runtime's
own profiler (per-node kernel times, grouped by the exported node names), OpenVINO's per-node
performance counters (grouped the same way) or timers around the torch modules. The split is
scaled to the uninstrumented network median, so the parts add up.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import statistics
import tempfile
import time
from collections import defaultdict
from types import SimpleNamespace
from typing import Dict, List

import numpy as np

from benchmarks.common import DATA, machine_stamp, textured, write_report

#: Exported node-name scopes (and torch modules) of each part of the network.
TRUNK = ("texture", "semantic", "cefg", "stfa")
FINE = ("fine4", "fine2", "refine", "coarse_to_fine4", "fine4_to_fine2")


def network_part(node_name: str) -> str:
    """trunk / coarse / fine for an ONNX node name (``/model/<scope>/...``); the unscoped nodes of
    the top-level graph are the dual softmax, the selection and the point bookkeeping (coarse)."""
    m = re.match(r"/model/([A-Za-z_]+[A-Za-z0-9_]*?)(?:_\d+)?(?:[./]|$)", node_name)
    scope = m.group(1) if m else ""
    if scope in TRUNK:
        return "trunk"
    if scope in FINE:
        return "fine"
    return "coarse"


def dev_pairs(sets: List[str], per_set: int):
    """(name, visible bgr uint8, thermal uint8) from the dev sets; synthetic pairs without data."""
    out = []
    for s in sets:
        for p in sorted(glob.glob(str(DATA / s / "*.npz")))[:per_set]:
            z = np.load(p)
            out.append((f"{s}/{os.path.basename(p)}", z["visible"], z["thermal"]))
    if not out:
        print(f"no dev sets under {DATA}: synthetic 640x480 pairs", flush=True)
        for k in range(per_set):
            g = textured(480, 640, k)
            out.append((f"synthetic/{k}", np.dstack([g] * 3), textured(480, 640, k + 100)))
    return out


def messages(vis: np.ndarray, th8: np.ndarray, k: int):
    """A bgr8 visible and a mono16 thermal message (counts as a 14-bit camera gives them)."""
    from distillmatch_ros.image_codec import numpy_to_image_fields
    vis = vis if vis.ndim == 3 else np.dstack([vis] * 3)
    counts = (th8.astype(np.uint16) * 40 + 3000 + k).astype(np.uint16)
    header = SimpleNamespace(stamp=SimpleNamespace(sec=k, nanosec=0), frame_id="cam")
    return (SimpleNamespace(header=header, **numpy_to_image_fields(vis, "bgr8")),
            SimpleNamespace(header=header, **numpy_to_image_fields(counts, "mono16")))


def bag_messages(bag: str):
    from distillmatch_ros.bag.io import BagReader
    from distillmatch_ros.bag.make_bag import THERMAL_TOPIC, VISIBLE_TOPIC
    from distillmatch_ros.sync import ApproximateTimeSynchronizer
    out = []
    with BagReader(bag) as reader:
        topics = reader.require_image_topics([VISIBLE_TOPIC, THERMAL_TOPIC])
        stream_of = {topics[0]: "visible", topics[1]: "thermal"}
        sync = ApproximateTimeSynchronizer(streams=("visible", "thermal"))
        for topic, _, msg in reader.messages(topics):
            out += [(v, t) for v, t, *_ in sync.add(stream_of[topic], msg)]
    return out


class TorchSplit:
    """Timers around the torch model's parts (instance attributes shadow the bound methods)."""

    def __init__(self, model):
        self.ms: Dict[str, float] = defaultdict(float)
        parts = [(n, "trunk", "forward") for n in TRUNK] + [(n, "fine", "forward") for n in FINE[:3]]
        for name, part, attr in parts + [("coarse", "coarse", "transform"), ("coarse", "coarse", "confidence"),
                                          ("coarse", "coarse", "select")]:
            self._wrap(getattr(model, name), attr, part)
        self._wrap(model, "_inject_coarse", "fine")

    def _wrap(self, obj, attr, part):
        fn = getattr(obj, attr)

        def timed(*a, **kw):
            t = time.perf_counter()
            r = fn(*a, **kw)
            self.ms[part] += (time.perf_counter() - t) * 1e3
            return r
        setattr(obj, attr, timed)


def ort_split(matcher, inputs, repeats: int) -> Dict[str, float]:
    """Per-part kernel time (ms per run) from ONNX Runtime's profiler on the backend's own model."""
    import onnxruntime as ort
    be = matcher._backend
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", 0)) or 2
    for k, v in getattr(be, "session_settings", {}).items():
        setattr(opts, k, v)
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    sess = ort.InferenceSession(str(be.onnx_path), opts, providers=["CPUExecutionProvider"])
    feeds = [{"visible": v, "thermal": t} for v, t in inputs]
    sess.run(None, feeds[0])
    for k in range(repeats):
        sess.run(None, feeds[k % len(feeds)])
    events = json.load(open(sess.end_profiling()))
    ms: Dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            ms[network_part(e["name"])] += e["dur"] / 1e3 / (repeats + 1)
    return dict(ms)


def openvino_split(matcher, inputs, repeats: int) -> Dict[str, float]:
    """Per-part time (ms per run) from OpenVINO's per-node performance counters, on the backend's
    own model (the export, or the INT8 IR) compiled with its settings. OpenVINO renames the nodes
    it fuses or adds (reorders, unnamed constants' consumers): what no ``/model/<scope>`` name
    claims counts as coarse."""
    import openvino as ov
    be = matcher._backend
    compiled = ov.Core().compile_model(str(be.model_path), "CPU", dict(be.session_settings, PERF_COUNT=True))
    request = compiled.create_infer_request()
    feeds = [{"visible": v, "thermal": t} for v, t in inputs]
    request.infer(feeds[0])
    ms: Dict[str, float] = defaultdict(float)
    for k in range(repeats):
        request.infer(feeds[k % len(feeds)])
        for info in request.profiling_info:
            ms[network_part(info.node_name)] += info.real_time.total_seconds() * 1e3 / repeats
    return dict(ms)


def profile(backend: str, msgs, rig_mode: bool, warmup: int, split_repeats: int) -> dict:
    from distillmatch_ros.correspondences import correspondence_fields
    from distillmatch_ros.image_codec import decode_pair, numpy_to_image_fields
    from distillmatch_ros.matcher import Matcher
    from distillmatch_ros.pipeline import PairPipeline, PipelineConfig
    matcher = Matcher.from_pretrained(backend=backend)
    pipe = PairPipeline(matcher, PipelineConfig(rig_mode=rig_mode, match_rate_hz=0.0))
    rows = defaultdict(list)
    for k in range(warmup + len(msgs)):
        vmsg, tmsg = msgs[k % len(msgs)]
        t0 = time.perf_counter()
        vis, th = decode_pair(vmsg, tmsg)
        t1 = time.perf_counter()
        out = pipe.step(vis, th, k * 100_000_000)
        t2 = time.perf_counter()
        pipe.render(out, vis, th)
        t3 = time.perf_counter()
        correspondence_fields(out)
        if out.fused is not None:
            numpy_to_image_fields(out.fused, "bgr8")
        t4 = time.perf_counter()
        if k < warmup:
            continue
        tm = out.result.timings_ms
        rows["decode"].append((t1 - t0) * 1e3)
        for key, name in (("preprocess", "preprocess"), ("network", "network"), ("homography", "ransac_verify")):
            rows[name].append(tm.get(key, 0.0))
        rows["alignment"].append((t2 - t1) * 1e3 - tm.get("total", 0.0))
        rows["fusion"].append((t3 - t2) * 1e3)
        rows["publish"].append((t4 - t3) * 1e3)
        rows["pair_total"].append((t4 - t0) * 1e3)
        rows["step_latency"].append(out.latency_ms)
        rows["matches"].append(len(out.result))
    med = {k: statistics.median(v) for k, v in rows.items()}
    # The network split, in an instrumented pass over the same inputs.
    inputs = []
    for vmsg, tmsg in msgs[:4]:
        vis, th = decode_pair(vmsg, tmsg)
        inputs.append(matcher.prepare(vis, th)[2:])
    if matcher.backend == "torch":
        split = TorchSplit(matcher.model)
        for k in range(split_repeats):
            matcher._backend(*inputs[k % len(inputs)])
        part_ms = {p: v / split_repeats for p, v in split.ms.items()}
    elif matcher.backend in ("openvino", "openvino_int8"):
        part_ms = openvino_split(matcher, inputs, split_repeats)
    else:
        part_ms = ort_split(matcher, inputs, split_repeats)
    total = sum(part_ms.values()) or 1.0
    med.update({f"network_{p}": med["network"] * v / total for p, v in part_ms.items()})
    med["backend"] = matcher.backend
    return med


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="torch,onnxruntime")
    ap.add_argument("--sets", default="roadscene_homography,m3svd_homography")
    ap.add_argument("--pairs", type=int, default=6, help="pairs per dev set")
    ap.add_argument("--bag", default="", help="replay this recording's pairs (rig mode) instead of the dev sets")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--split-repeats", type=int, default=6)
    ap.add_argument("--json", default="")
    a = ap.parse_args(argv)
    if a.bag:
        msgs, rig = bag_messages(a.bag), True
    else:
        msgs, rig = [messages(v, t, k) for k, (_, v, t) in enumerate(dev_pairs(a.sets.split(","), a.pairs))], False
    report = {**machine_stamp(int(os.environ.get("OMP_NUM_THREADS", 0)) or None), "pairs": len(msgs),
              "input": a.bag or a.sets, "rows": []}
    order = ("decode", "preprocess", "network", "network_trunk", "network_coarse", "network_fine", "ransac_verify",
             "alignment", "fusion", "publish", "pair_total", "step_latency")
    for be in a.backends.split(","):
        row = profile(be, msgs, rig, a.warmup, a.split_repeats)
        report["rows"].append(row)
        print(f"{row['backend']:24s} " + " | ".join(f"{k} {row[k]:.1f}" for k in order if k in row)
              + f" | matches {row['matches']:.0f}", flush=True)
    write_report(report, a.json, show=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
