"""One-call GPU check: TensorRT engine build, parity against PyTorch, FP16/FP32 timing at 640x512.

    python -m benchmarks.gpu_check --size 640x512 --json out/gpu_check.json

Steps (each reported, none hidden by a failure of another):
1. PyTorch CUDA eager FP32 and FP16 (autocast) median ms per pair at the working size;
2. TensorRT through torch-tensorrt (FP16 engine, cached on disk): build time, a second load from
   the cache, median ms, and parity with PyTorch FP32 (share of identical matches, max coordinate
   difference on shared matches);
3. ONNX Runtime with the CUDA provider when onnxruntime-gpu is installed.
Uses the shipped model when present (weights are resolution independent), else random weights.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np
import torch

from benchmarks.common import parse_size, sized_model, textured, write_report


def timed(fn, n=30, warm=5):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts)


def parity(a, b):
    """Share of matches of ``a`` found in ``b`` (same visible cell) and max coordinate difference."""
    va, vb = a[3].astype(bool), b[3].astype(bool)
    ka = {tuple(np.round(p, 1)): i for i, p in enumerate(a[0]) if va[i]}
    same, diff = 0, 0.0
    for i, p in enumerate(b[0]):
        j = ka.get(tuple(np.round(p, 1)))
        if vb[i] and j is not None:
            same += 1
            diff = max(diff, float(np.abs(a[1][j] - b[1][i]).max()))
    return same / max(1, int(va.sum())), diff


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="640x512")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    size = parse_size(a.size)
    rep = {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "torch": torch.__version__, "size": a.size}
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check here")
        return 1
    from distillmatch_ros.backends import OnnxRuntimeBackend, TensorRTBackend, TorchBackend
    model, _, rep["weights"] = sized_model(size)
    model.match_threshold = 0.0
    w, h = size
    vis = (textured(h, w, 1).astype(np.float32) / 255)[None, None]
    th = (textured(h, w, 2).astype(np.float32) / 255)[None, None]
    tb = TorchBackend(model, "cuda")
    ref = tb(vis, th)
    rep["torch_fp32_ms"] = timed(lambda: tb(vis, th))
    with torch.autocast("cuda", dtype=torch.float16):
        rep["torch_fp16_autocast_ms"] = timed(lambda: tb(vis, th))
        rep["torch_fp16_parity"] = parity(ref, tb(vis, th))
    print(json.dumps(rep), flush=True)
    os.environ.setdefault("DISTILLMATCH_CACHE", tempfile.mkdtemp())
    try:
        t = time.perf_counter()
        trt = TensorRTBackend(model, "cuda", size)
        rep["trt_build_s"] = time.perf_counter() - t
        t = time.perf_counter()
        trt = TensorRTBackend(model, "cuda", size)
        rep["trt_cached_load_s"] = time.perf_counter() - t
        rep["trt_fp16_ms"] = timed(lambda: trt(vis, th))
        rep["trt_parity_identical_share"], rep["trt_max_coord_diff_px"] = parity(ref, trt(vis, th))
    except Exception as exc:  # noqa: BLE001 - reported, the other figures still count
        rep["tensorrt_error"] = f"{type(exc).__name__}: {exc}"
    try:
        ort = OnnxRuntimeBackend(model, "cuda", size)
        rep["ort_cuda_ms"] = timed(lambda: ort(vis, th))
        rep["ort_cuda_parity"] = parity(ref, ort(vis, th))
    except Exception as exc:  # noqa: BLE001
        rep["onnxruntime_cuda_error"] = f"{type(exc).__name__}: {exc}"
    write_report(rep, a.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
