"""``backend="auto"`` without a GPU: the fastest ONNX Runtime path that keeps the accuracy.

Why measured here and not decided once by the developers: whether INT8 pays depends on the CPU
(8-bit dot products, VNNI, are on some and not others) and on the thread count, and whether it
keeps the accuracy depends on the weights, which change with every training run.

``python -m distillmatch_ros.cpu_prepare`` builds the INT8 model and, for this model, working size,
CPU, ONNX Runtime version and thread count, runs both candidates (``onnxruntime``: FP32;
``onnxruntime_int8``: the trunk in INT8) as the whole matcher on check pairs with a known
homography: the demo's sample pairs (bundled photos, V2I-GAN pseudo-infrared, rendered through
the demo's rig). INT8 is chosen when its AUC@10 on
them is within :data:`AUC_TOLERANCE` of FP32's and its median time per pair is below FP32's.
The decision (times, AUCs) is written to the cache, and ``auto`` follows it; without it
``auto`` is FP32. Why not at the first start: a node that spent a minute quantising and measuring
before its first pair would surprise an operator, and the check pairs need the V2I-GAN run.
Run the command again after the weights change (the record is keyed by their hash).
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import torch

from .backends import GRAPH_VERSION, OnnxRuntimeBackend, cache_dir, machine_tag, model_hash

AUC_TOLERANCE = 0.01


def applies(device) -> bool:
    """True when auto means a CPU choice: no CUDA asked for or present, and ONNX Runtime installed."""
    if (device and str(device).startswith("cuda")) or torch.cuda.is_available():
        return False
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def check_pairs() -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(visible, thermal, thermal->visible H) of the demo's sample pairs through its rig."""
    from .bag.make_bag import default_rig_homography, render_pair
    from .bag.sample import THERMAL_SIZE, VISIBLE_SIZE, sample_pairs
    pairs, _ = sample_pairs(VISIBLE_SIZE)
    H = default_rig_homography(VISIBLE_SIZE, THERMAL_SIZE)
    return [(*render_pair(p, VISIBLE_SIZE, THERMAL_SIZE, H), H) for p in pairs]


def measure(matcher, backend, pairs) -> Dict[str, float]:
    """AUC@10 of the protocol's homography error and median ms per pair of ``matcher`` on ``backend``."""
    from . import evaluation
    matcher._backend, matcher._rough_backend = backend, None  # the rough pass runs on the same kind
    errs, times = [], []
    for vis, th, H in pairs:
        matcher.match(vis, th)  # warm (first runs allocate)
        t = time.perf_counter()
        r = matcher.match(vis, th)
        times.append((time.perf_counter() - t) * 1e3)
        truth = evaluation.GroundTruth.from_homography(H, (th.shape[1], th.shape[0]))
        errs.append(evaluation.homography_error(truth, np.asarray(r.visible_points, np.float64),
                                                np.asarray(r.thermal_points, np.float64)))
    return {"auc10": evaluation.auc(errs, 10), "ms": statistics.median(times)}


def decide(fp32: Dict[str, float], int8: Dict[str, float]) -> Tuple[str, str]:
    """The backend name and why, from the two candidates' measurements."""
    if int8["auc10"] < fp32["auc10"] - AUC_TOLERANCE:
        return "onnxruntime", (f"INT8 loses accuracy (AUC@10 {int8['auc10']:.3f} vs FP32 {fp32['auc10']:.3f} "
                               f"on the check pairs)")
    if int8["ms"] >= fp32["ms"]:
        return "onnxruntime", f"INT8 is not faster here ({int8['ms']:.0f} vs {fp32['ms']:.0f} ms a pair)"
    return "onnxruntime_int8", (f"INT8 {int8['ms']:.0f} vs FP32 {fp32['ms']:.0f} ms a pair, AUC@10 "
                                f"{int8['auc10']:.3f} vs {fp32['auc10']:.3f} on the check pairs")


def record_path(matcher) -> Path:
    """Where the measured choice for this model, working size, CPU, ORT version and threads lives."""
    w, h = matcher.input_size
    return cache_dir() / (f"auto-{model_hash(matcher.model)}-{w}x{h}-g{GRAPH_VERSION}-{machine_tag()}"
                          f"-t{torch.get_num_threads()}.json")


def choose(matcher, device) -> Tuple[Any, str]:
    """The backend object for ``auto`` on this CPU and a one-line account of the choice."""
    path = record_path(matcher)
    record = json.loads(path.read_text()) if path.exists() else None
    if record is None:
        return (OnnxRuntimeBackend(matcher.model, device, matcher.input_size),
                "auto: onnxruntime (FP32; INT8 not measured on this machine for this model: "
                "python -m distillmatch_ros.cpu_prepare)")
    name = record["choice"]
    if name == "onnxruntime_int8" and not Path(record["int8_model"]).exists():
        name, record["reason"] = "onnxruntime", f"the measured INT8 model {record['int8_model']} is gone"
    backend = OnnxRuntimeBackend(matcher.model, device, matcher.input_size, int8=name == "onnxruntime_int8",
                                 prepare=matcher.prepare)
    return backend, f"auto: {name} ({record['reason']}; measured {record['date']})"


def prepare(matcher, device=None, pairs=None) -> Dict[str, Any]:
    """Build the INT8 model, measure both candidates on the check pairs and record the choice."""
    fp32 = OnnxRuntimeBackend(matcher.model, device, matcher.input_size)
    int8 = OnnxRuntimeBackend(matcher.model, device, matcher.input_size, int8=True, prepare=matcher.prepare)
    pairs = check_pairs() if pairs is None else pairs
    m_fp32, m_int8 = measure(matcher, fp32, pairs), measure(matcher, int8, pairs)
    name, reason = decide(m_fp32, m_int8)
    record = {"choice": name, "reason": reason, "fp32": m_fp32, "int8": m_int8, "int8_model": str(int8.onnx_path),
              "check_pairs": len(pairs), "date": time.strftime("%Y-%m-%d %H:%M")}
    record_path(matcher).write_text(json.dumps(record, indent=1))
    matcher._backend, matcher._rough_backend = (int8 if name == "onnxruntime_int8" else fp32), None
    return record
