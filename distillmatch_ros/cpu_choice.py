"""``backend="auto"`` without a GPU: the fastest CPU path that keeps the accuracy, measured here.

Why measured on the machine and not decided once by the developers: whether a path pays depends
on the CPU (OpenVINO's and ONNX Runtime's kernels differ by CPU; 8-bit dot products, VNNI,
decide INT8), on the thread count and on the runtime versions, and whether a reduced precision
keeps the accuracy depends on the weights, which change with every training run.

The candidates run as the whole matcher (its default passes) on check pairs with a known
homography: the demo's sample pairs (bundled photos, V2I-GAN pseudo-infrared, rendered through the
demo's rig). ``onnxruntime`` (FP32) is the reference; a candidate qualifies when its share of
matches within 3 px of the truth is within :data:`TOLERANCE` of the reference's (:func:`decide`
says why not AUC@10), and the fastest qualifying one (median time per pair) is chosen. The
decision (times, precisions, AUCs, why) is written to the cache, keyed by weights, working size,
CPU, runtime versions, thread count and the INT8 calibration source, and ``auto`` follows it.

* At the first ``auto`` start without a record, the candidates that need no build are measured
  (``onnxruntime``, ``openvino``): about half a minute, once, announced on stdout.
* ``python -m distillmatch_ros.cpu_prepare`` also builds and measures the INT8 models,
  ``onnxruntime_int8`` and ``openvino_int8`` (quantisation takes a minute or two, too long for a
  node's start); ``scripts/setup_env.sh`` runs it for the shipped model.
Run either again after the weights change (the record is keyed by their hash).
"""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from .backends import GRAPH_VERSION, OnnxRuntimeBackend, cache_dir, machine_tag, make_backend, model_hash
from .errors import BackendUnavailable

#: How much lower a candidate's share of matches within 3 px may be than the reference's.
TOLERANCE = 0.01
REFERENCE = "onnxruntime"
#: The candidates that need a build step (quantisation with calibration images): cpu_prepare only.
BUILT_CANDIDATES = ("onnxruntime_int8", "openvino_int8")


def applies(device) -> bool:
    """True when auto means a CPU choice: no CUDA asked for or present, and ONNX Runtime installed."""
    if (device and str(device).startswith("cuda")) or torch.cuda.is_available():
        return False
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def quick_candidates() -> List[str]:
    """The CPU backends installed here that need no build step, the reference first."""
    names = [REFERENCE]
    try:
        import openvino  # noqa: F401
        names.append("openvino")
    except ImportError:
        pass
    return names


def check_pairs() -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(visible, thermal, thermal->visible H) of the demo's sample pairs through its rig."""
    from .bag.make_bag import default_rig_homography, render_pair
    from .bag.sample import THERMAL_SIZE, VISIBLE_SIZE, sample_pairs
    pairs, _ = sample_pairs(VISIBLE_SIZE)
    H = default_rig_homography(VISIBLE_SIZE, THERMAL_SIZE)
    return [(*render_pair(p, VISIBLE_SIZE, THERMAL_SIZE, H), H) for p in pairs]


def measure(matcher, backends: Dict[str, Any], pairs) -> Dict[str, Dict[str, float]]:
    """Per backend: the median over pairs of the share of matches within 3 px of the truth
    (``prec3``), AUC@10 of the protocol's homography error and the median ms per pair of
    ``matcher`` on it. The backends take turns pair by pair, so a drifting machine load hits
    them alike."""
    from . import evaluation
    graphs: Dict[str, Dict[str, Any]] = {}
    rows: Dict[str, List[Tuple[float, float, float]]] = {n: [] for n in backends}
    for i, (vis, th, H) in enumerate([pairs[0]] + list(pairs)):  # the first round warms (first runs allocate)
        truth = evaluation.GroundTruth.from_homography(H, (th.shape[1], th.shape[0]))
        for name, backend in backends.items():
            # the rough and guided passes: the same kind
            matcher._backend, matcher._graphs = backend, graphs.setdefault(name, {})
            t = time.perf_counter()
            r = matcher.match(vis, th)
            ms = (time.perf_counter() - t) * 1e3
            score = evaluation.evaluate_pair(truth, r.visible_points, r.thermal_points)
            if i:
                rows[name].append((score["prec"], score["err"], ms))
    return {n: {"prec3": float(np.median([r[0] for r in v])), "auc10": evaluation.auc([r[1] for r in v], 10),
                "ms": statistics.median(r[2] for r in v)} for n, v in rows.items()}


def decide(measured: Dict[str, Dict[str, float]]) -> Tuple[str, str]:
    """The backend name and why: the fastest candidate whose match precision is within the
    tolerance of the reference's (``measured`` holds the reference). Why the median precision and
    not AUC@10: FP32 OpenVINO and FP32 ONNX Runtime give the same matches in another order, and
    on a borderline pair that order changes MAGSAC's fit, so whether the pair gets a guided pass
    and what it then finds. One such pair in a dozen moved AUC@10 by 0.05 and the mean precision
    by 0.04; the median over pairs of the share of right matches (hundreds a pair) does not see it."""
    ref = measured[REFERENCE]
    keeps = {n: m for n, m in measured.items() if m["prec3"] >= ref["prec3"] - TOLERANCE}
    name = min(keeps, key=lambda n: keeps[n]["ms"])
    lost = [f"{n} loses accuracy (matches within 3 px {m['prec3']:.3f} vs {ref['prec3']:.3f})"
            for n, m in measured.items() if n not in keeps]
    times = ", ".join(f"{n} {m['ms']:.0f}" for n, m in sorted(keeps.items(), key=lambda kv: kv[1]["ms"]))
    reason = f"fastest that keeps the accuracy on the check pairs: {times} ms a pair"
    return name, reason + ("; " + "; ".join(lost) if lost else "")


def record_path(matcher) -> Path:
    """Where the measured choice for this model, working size, CPU, runtimes, threads and INT8
    calibration source lives (the INT8 models measured are those of that source)."""
    from .quantize import calibration_source
    w, h = matcher.input_size
    try:
        import openvino
        ov = f"-ov{openvino.__version__.split('-')[0]}"
    except ImportError:
        ov = ""
    return cache_dir() / (f"auto-{model_hash(matcher.model)}-{w}x{h}-g{GRAPH_VERSION}-{machine_tag()}{ov}"
                          f"-t{torch.get_num_threads()}-c{calibration_source()}.json")


RECORD_KEYS = ("choice", "reason", "date", "measured", "unavailable")


def read_record(path: Path) -> Tuple[Optional[Dict[str, Any]], str]:
    """The record at ``path`` with every key a reader needs, or None and why not."""
    if not path.exists():
        return None, "nothing recorded"
    try:
        record = json.loads(path.read_text())
        missing = [k for k in RECORD_KEYS if k not in record]
        if missing:
            raise KeyError(", ".join(missing))
        return record, ""
    except (OSError, ValueError, KeyError, TypeError) as exc:  # cut short or edited by hand
        return None, f"the record is unreadable ({exc.__class__.__name__}: {exc})"


def fully_measured(matcher) -> bool:
    """True when the record for this model and machine holds every candidate, the built ones
    included (measured or found unavailable): what cpu_prepare would measure again."""
    record, _ = read_record(record_path(matcher))
    seen = set(record["measured"]) | set(record["unavailable"]) if record else set()
    return set(quick_candidates()) | set(BUILT_CANDIDATES) <= seen


def choose(matcher, device) -> Tuple[Any, str]:
    """The backend object for ``auto`` on this CPU and a one-line account of the choice; measures
    the quick candidates first when nothing is recorded for this model and machine."""
    path = record_path(matcher)
    record, why = read_record(path)
    if record is None:
        print(f"distillmatch backend auto: {why}; measuring {', '.join(quick_candidates())} on the check pairs, "
              f"once for this model and machine (about half a minute) -> {path}", flush=True)
        record = prepare(matcher, device, int8=False)
        return matcher._backend, f"auto: {record['choice']} ({record['reason']}; measured now)"
    name, reason = record["choice"], record["reason"]
    try:
        backend = make_backend(name, matcher.model, device, matcher.input_size, prepare=matcher.prepare)
    except BackendUnavailable as exc:  # e.g. openvino uninstalled since, or the INT8 model's calibration gone
        backend, name = OnnxRuntimeBackend(matcher.model, device, matcher.input_size), REFERENCE
        reason = f"the measured choice {record['choice']} is unavailable now: {exc}"
    return backend, f"auto: {name} ({reason}; measured {record['date']})"


def prepare(matcher, device=None, pairs=None, int8: bool = True) -> Dict[str, Any]:
    """Measure the candidates (with ``int8``, build and measure the INT8 model too) on the check
    pairs, record the choice and leave the matcher on it."""
    names = quick_candidates() + (list(BUILT_CANDIDATES) if int8 else [])
    backends, unavailable = {}, {}
    for n in names:
        try:
            backends[n] = make_backend(n, matcher.model, device, matcher.input_size, prepare=matcher.prepare)
        except BackendUnavailable as exc:
            if n == REFERENCE:
                raise
            unavailable[n] = str(exc)  # recorded and left out, not a failed start
    pairs = check_pairs() if pairs is None else pairs
    measured = measure(matcher, backends, pairs)
    name, reason = decide(measured)
    reason += "".join(f"; {n} unavailable: {why}" for n, why in unavailable.items())
    record = {"choice": name, "reason": reason, "measured": measured, "unavailable": unavailable,
              "check_pairs": len(pairs), "date": time.strftime("%Y-%m-%d %H:%M")}
    path = record_path(matcher)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # written whole, then renamed: a reader never sees half
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)
    matcher._backend, matcher._graphs = backends[name], {}
    return record
