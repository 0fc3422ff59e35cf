"""The ``distillmatch_msgs/msg/Correspondences`` message, seen from plain Python (no rclpy).

The type is defined once, in ``interfaces/distillmatch_msgs/msg/Correspondences.msg``; the
interface build and :func:`register_rosbags` both read that file, so a bag recorded from the
node decodes with ``rosbags`` alone. :func:`correspondence_fields` turns a pipeline result into
message fields (array fields as ``array.array`` for rclpy, or numpy for rosbags) and
:func:`decode` turns a received or bag-read message back into numpy arrays.
"""
from __future__ import annotations

import array
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from .pipeline import ALIGNMENT_STATES, THERMAL_STATES
from .sync import stamp_to_ns

MSG_TYPE = "distillmatch_msgs/msg/Correspondences"
# A state's code is its index in the pipeline's list (the .msg's constants; a test reads both).
ALIGNMENT_CODES = {state: code for code, state in enumerate(ALIGNMENT_STATES)}
THERMAL_CODES = {state: code for code, state in enumerate(THERMAL_STATES)}


def _candidates() -> List[Path]:
    rel = Path("msg") / "Correspondences.msg"
    out = [Path(__file__).resolve().parents[1] / "interfaces" / "distillmatch_msgs" / rel]  # source tree
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    for prefix in prefixes:
        out.append(Path(prefix) / "share" / "distillmatch_msgs" / rel)  # installed interface package
        out.append(Path(prefix) / "share" / "distillmatch_ros" / rel)  # installed with distillmatch_ros
    return out


def msg_definition() -> str:
    """Text of Correspondences.msg (source tree first, then installed copies)."""
    for path in _candidates():
        if path.is_file():
            return path.read_text()
    raise FileNotFoundError("Correspondences.msg not found; looked in:\n  " +
                            "\n  ".join(str(p) for p in _candidates()))


def register_rosbags(typestore: Any) -> Any:
    """Register the Correspondences type with a rosbags Typestore (returns it)."""
    from rosbags.typesys import get_types_from_msg
    typestore.register(get_types_from_msg(msg_definition(), MSG_TYPE))
    return typestore


def correspondence_fields(out: Any, numpy_arrays: bool = False) -> Dict[str, Any]:
    """Message fields (all but header / thermal stamp / frame ids) of a pipeline PairOutput."""
    r = out.result
    n = len(r) if out.matched else 0
    vis = np.ascontiguousarray(r.visible_points[:n], np.float32).reshape(-1)
    th = np.ascontiguousarray(r.thermal_points[:n], np.float32).reshape(-1)
    scores = np.ascontiguousarray(r.scores[:n], np.float32)
    inl = r.inliers[:n] if r.inliers.shape[0] >= n else np.zeros(n, bool)
    inliers = np.ascontiguousarray(inl, np.uint8)
    H = out.homography
    h9 = np.asarray(H, np.float64).reshape(9) if H is not None else np.zeros(9)
    if numpy_arrays:
        arrays = {"visible_points": vis, "thermal_points": th, "scores": scores, "inliers": inliers}
    else:  # array.array: rclpy takes it without a per-element check
        arrays = {"visible_points": array.array("f", vis.tobytes()),
                  "thermal_points": array.array("f", th.tobytes()),
                  "scores": array.array("f", scores.tobytes()),
                  "inliers": array.array("B", inliers.tobytes())}
    return dict(arrays, visible_width=out.visible_size[0], visible_height=out.visible_size[1],
                thermal_width=out.thermal_size[0], thermal_height=out.thermal_size[1],
                matched=bool(out.matched), homography_valid=H is not None,
                homography=h9 if numpy_arrays else h9.copy(), num_inliers=int(out.num_inliers),
                alignment_confidence=float(out.confidence) if H is not None else 0.0,
                verification=str(r.verification) if out.matched else "",
                drift_px=float("nan") if out.drift_px is None else float(out.drift_px),
                calibrated=bool(getattr(out, "calibrated", False)),
                alignment_state=ALIGNMENT_CODES[out.alignment],
                thermal_state=THERMAL_CODES[out.thermal_state], backend=str(out.backend),
                latency_ms=float(out.latency_ms))


def decode(msg: Any) -> Dict[str, Any]:
    """A Correspondences message (rclpy or rosbags) as numpy arrays and plain values."""
    vis = np.asarray(msg.visible_points, np.float32).reshape(-1, 2)
    H: Optional[np.ndarray] = np.asarray(msg.homography, np.float64).reshape(3, 3) \
        if msg.homography_valid else None
    return {"stamp_ns": stamp_to_ns(msg.header.stamp),
            "frame_id": msg.header.frame_id,
            "visible_points": vis, "thermal_points": np.asarray(msg.thermal_points, np.float32).reshape(-1, 2),
            "scores": np.asarray(msg.scores, np.float32), "inliers": np.asarray(msg.inliers, np.uint8) > 0,
            "homography": H, "num_inliers": int(msg.num_inliers), "matched": bool(msg.matched),
            "visible_size": (int(msg.visible_width), int(msg.visible_height)),
            "thermal_size": (int(msg.thermal_width), int(msg.thermal_height)),
            "alignment": _state(ALIGNMENT_STATES, msg.alignment_state),
            "thermal_state": _state(THERMAL_STATES, msg.thermal_state),
            "backend": msg.backend, "latency_ms": float(msg.latency_ms),
            "alignment_confidence": float(getattr(msg, "alignment_confidence", 0.0)),
            "verification": str(getattr(msg, "verification", "")),
            "drift_px": float(getattr(msg, "drift_px", float("nan"))),
            "calibrated": bool(getattr(msg, "calibrated", False))}


def _state(states, code: int) -> str:
    return states[int(code)] if 0 <= int(code) < len(states) else "unknown"
