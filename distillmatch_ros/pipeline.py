"""What the node does with one synchronized visible/thermal pair, as plain Python over Matcher.

The ROS node and bag evaluation both run :class:`PairPipeline`, so a bag replay exercises the
node's exact code path. Per pair it:

1. checks the thermal frame for camera realities (:class:`ThermalMonitor`): constant frames
   and frozen (repeated) frames during flat-field correction, and gain changes;
2. matches, every pair, or in *rig mode* only at ``match_rate_hz`` while holding a filtered
   homography in between (a rigid rig's alignment hardly changes, and matching costs far more
   than warping);
3. in rig mode, checks that the held homography still explains the current matches; when it
   does not (drift: a knock, a re-mount, a focus change) twice in a row, it re-estimates;
4. fuses the thermal image into the visible frame with the held (or per-pair) homography.

:meth:`PairPipeline.step` does 1-3 and :meth:`PairPipeline.render` does 4, so the node can
publish correspondences before it renders; :meth:`PairPipeline.process` does both.

Stalls and bad frames never raise here except :class:`InputError` for images that cannot be
used at all; everything else is reported through :class:`PairOutput` events and counters.
"""
from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field, fields, replace
from typing import Any, Deque, Dict, List, Optional, Tuple

import cv2
import numpy as np

from .errors import InputError
from .result import MatchResult

ALIGNMENT_STATES = ("unaligned", "aligned", "drift_suspected")
THERMAL_STATES = ("ok", "constant", "frozen")
FUSION_MODES = ("alpha", "structure")


@dataclass
class PipelineConfig:
    """Per-pair processing settings; all may change while running (see :meth:`PairPipeline.configure`)."""

    rig_mode: bool = True  # hold a filtered homography, re-match at match_rate_hz
    match_rate_hz: float = 2.0  # re-match rate in rig mode (stamp time); 0 = every pair
    min_inliers: int = 12  # fewer RANSAC inliers than this: the estimate is not trusted
    drift_threshold_px: float = 8.0  # a match is explained by the held H within this error
    drift_min_explained: float = 0.5  # below this fraction of explained inliers: drift
    drift_confirmations: int = 2  # consecutive drift detections before re-estimating
    homography_smoothing: float = 0.3  # weight of a new estimate in the held H (1 = no filter)
    fuse: bool = True  # produce the fused image
    fusion_mode: str = "alpha"  # "alpha" (colour-mapped blend) or "structure"
    fusion_alpha: float = 0.5  # thermal weight in the fused image
    draw_matches: bool = False  # produce a match visualisation on matched pairs
    thermal_constant_rel_std: float = 0.05  # constant: std below this x the usual std
    thermal_frozen_frames: int = 2  # identical consecutive frames before "frozen"
    gain_change_threshold: float = 0.25  # relative jump of median/range between frames

    def validated(self) -> "PipelineConfig":
        """Return self after checking ranges; raises ValueError naming the bad setting."""
        if self.fusion_mode not in FUSION_MODES:
            raise ValueError(f"fusion_mode must be one of {FUSION_MODES}, got {self.fusion_mode!r}")
        for name, lo, hi in (("fusion_alpha", 0, 1), ("homography_smoothing", 0, 1),
                             ("drift_min_explained", 0, 1), ("match_rate_hz", 0, 1000),
                             ("drift_threshold_px", 0, 1e4), ("thermal_constant_rel_std", 0, 1),
                             ("gain_change_threshold", 0, 100)):
            v = getattr(self, name)
            if not lo <= v <= hi:
                raise ValueError(f"{name} must be in [{lo}, {hi}], got {v}")
        for name, lo in (("min_inliers", 4), ("drift_confirmations", 1), ("thermal_frozen_frames", 1)):
            if int(getattr(self, name)) < lo:
                raise ValueError(f"{name} must be >= {lo}, got {getattr(self, name)}")
        return self


@dataclass
class PairOutput:
    """Everything the node publishes for one pair."""

    stamp_ns: int
    result: MatchResult  # this pair's matches (empty when it was not re-matched)
    matched: bool  # True when the matcher ran on this pair
    homography: Optional[np.ndarray]  # thermal -> visible used for fusion (None: unaligned)
    num_inliers: int  # inliers behind ``homography``
    alignment: str  # one of ALIGNMENT_STATES
    thermal_state: str  # one of THERMAL_STATES
    visible_size: Tuple[int, int]  # (width, height)
    thermal_size: Tuple[int, int]
    events: List[str] = field(default_factory=list)
    fused: Optional[np.ndarray] = None  # bgr8 in the visible frame
    matches_image: Optional[np.ndarray] = None
    latency_ms: float = 0.0


class LatencyStats:
    """Rolling percentiles of recent latencies (bounded memory)."""

    def __init__(self, window: int = 1000):
        self._values: Deque[float] = deque(maxlen=window)
        self.count = 0

    def add(self, ms: float) -> None:
        self._values.append(float(ms))
        self.count += 1

    def summary(self) -> Dict[str, float]:
        """p50 / p95 / max over the window, in ms (NaN when empty)."""
        if not self._values:
            return {"p50": float("nan"), "p95": float("nan"), "max": float("nan"), "n": 0}
        v = np.fromiter(self._values, float)
        p50, p95 = np.percentile(v, [50, 95])
        return {"p50": float(p50), "p95": float(p95), "max": float(v.max()), "n": int(v.size)}


class ThermalMonitor:
    """Flags constant frames, frozen (repeated) frames and gain jumps of a thermal camera.

    Works on a 1/16 subsample of the raw values (any dtype); thresholds are relative to what the
    camera usually shows, so 8-bit AGC output, 16-bit counts and float temperatures all work.
    """

    _ABS_FLOOR = {np.dtype(np.uint8): 0.5, np.dtype(np.uint16): 0.5, np.dtype(np.float32): 1e-3}

    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg
        self.state = "ok"
        self._prev: Optional[np.ndarray] = None
        self._repeats = 0
        self._usual_std: Optional[float] = None
        self._prev_stats: Optional[Tuple[float, float]] = None

    def update(self, thermal: np.ndarray) -> Tuple[str, List[str]]:
        """Classify a frame; returns (state, events) with events on state changes and gain jumps."""
        small = np.ascontiguousarray(thermal[::4, ::4])
        if self._prev is not None and self._prev.shape == small.shape and np.array_equal(small, self._prev):
            self._repeats += 1
        else:
            self._repeats = 0
        self._prev = small
        f = small.astype(np.float32)
        std = float(f.std())
        floor = self._ABS_FLOOR.get(small.dtype, 1e-3)
        constant = std <= floor or (self._usual_std is not None
                                    and std < self.cfg.thermal_constant_rel_std * self._usual_std)
        frozen = self._repeats >= max(1, self.cfg.thermal_frozen_frames - 1)
        state = "constant" if constant else "frozen" if frozen else "ok"
        events: List[str] = []
        if state != self.state:
            events.append(f"thermal_{state}" if state != "ok" else "thermal_recovered")
        self.state = state
        if state == "ok":
            self._usual_std = std if self._usual_std is None else 0.9 * self._usual_std + 0.1 * std
            lo, med, hi = np.percentile(f, [1, 50, 99])
            stats = (float(med), float(hi - lo))
            if self._prev_stats is not None:
                pmed, prange = self._prev_stats
                scale = max(prange, floor)
                if (abs(stats[1] - prange) / scale > self.cfg.gain_change_threshold
                        or abs(stats[0] - pmed) / scale > self.cfg.gain_change_threshold):
                    events.append("gain_change")
            self._prev_stats = stats
        return state, events


def project(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 3x3 homography to (N, 2) points."""
    p = np.asarray(pts, np.float64).reshape(-1, 2)
    q = p @ H[:, :2].T + H[:, 2]
    return q[:, :2] / q[:, 2:3]


def blend_homographies(H_old: np.ndarray, H_new: np.ndarray, weight: float,
                       size: Tuple[int, int]) -> np.ndarray:
    """Filter two homographies through the images of the thermal corners (a 4-point average).

    Averaging matrix entries mixes scales and is not meaningful; averaging where the corners
    land is, and gives back a homography.
    """
    w, h = size
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
    mixed = (1.0 - weight) * project(H_old, corners) + weight * project(H_new, corners)
    H = cv2.getPerspectiveTransform(corners.astype(np.float32), mixed.astype(np.float32))
    return H / H[2, 2]


def scale_homography(thermal_size: Tuple[int, int], visible_size: Tuple[int, int]) -> np.ndarray:
    """Thermal -> visible by stretching the whole image (the fallback before any alignment)."""
    (tw, th), (vw, vh) = thermal_size, visible_size
    return np.diag([vw / tw, vh / th, 1.0])


class PairPipeline:
    """Processes synchronized pairs with a Matcher (or anything with ``.match(v, t)``)."""

    def __init__(self, matcher: Any, config: Optional[PipelineConfig] = None):
        self.matcher = matcher
        self.config = (config or PipelineConfig()).validated()
        self.thermal = ThermalMonitor(self.config)
        self.latency = LatencyStats()
        self.match_latency = LatencyStats()
        self.render_latency = LatencyStats()
        self.counters: Counter = Counter()
        self.alignment = "unaligned"
        self.held: Optional[np.ndarray] = None
        self.held_inliers = 0
        self.last_result: MatchResult = MatchResult.empty()
        self._last_match_ns: Optional[int] = None
        self._drift_count = 0
        self._force_match = False
        self._sizes: Optional[Tuple[Tuple[int, int], Tuple[int, int]]] = None

    def configure(self, **changes: Any) -> None:
        """Change settings at run time; unknown names or bad values raise ValueError."""
        known = {f.name for f in fields(PipelineConfig)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown pipeline settings: {sorted(unknown)}")
        new = replace(self.config, **changes).validated()
        if new.rig_mode != self.config.rig_mode:
            self.reset_alignment()
        self.config = new
        self.thermal.cfg = new

    def reset_alignment(self) -> None:
        """Forget the held homography (the next pair is matched)."""
        self.held, self.held_inliers, self.alignment = None, 0, "unaligned"
        self._drift_count, self._last_match_ns = 0, None

    # -- per pair -----------------------------------------------------------------------
    def process_messages(self, visible_msg: Any, thermal_msg: Any, render: bool = True) -> PairOutput:
        """Decode two Image messages (rclpy or rosbags) and process them; stamp from the visible."""
        from .image_codec import thermal_to_numpy, visible_to_numpy
        from .sync import header_stamp_ns
        try:
            visible = visible_to_numpy(visible_msg)
            thermal = thermal_to_numpy(thermal_msg)
        except InputError:
            self.counters["input_errors"] += 1
            raise
        out = self.step(visible, thermal, header_stamp_ns(visible_msg))
        if render:
            self.render(out, visible, thermal)
        return out

    def process(self, visible: np.ndarray, thermal: np.ndarray, stamp_ns: int) -> PairOutput:
        """:meth:`step` then :meth:`render`: match (when due), update the alignment, fuse."""
        out = self.step(visible, thermal, stamp_ns)
        self.render(out, visible, thermal)
        return out

    def step(self, visible: np.ndarray, thermal: np.ndarray, stamp_ns: int) -> PairOutput:
        """Everything but the images: thermal checks, matching when due, alignment.

        Split from :meth:`render` so the node can publish correspondences before it spends
        time on the fused image. Raises InputError for unusable images.
        """
        t0 = time.perf_counter()
        self.counters["pairs"] += 1
        if visible.ndim not in (2, 3) or thermal.ndim != 2 or min(visible.shape[:2] + thermal.shape) < 1:
            self.counters["input_errors"] += 1
            raise InputError(f"unusable image shapes: visible {visible.shape}, thermal {thermal.shape}")
        vsize = (int(visible.shape[1]), int(visible.shape[0]))
        tsize = (int(thermal.shape[1]), int(thermal.shape[0]))
        events: List[str] = []
        if self._sizes is not None and self._sizes != (vsize, tsize):
            self.reset_alignment()
            events.append("resolution_changed")
        self._sizes = (vsize, tsize)

        thermal_state, t_events = self.thermal.update(thermal)
        events += t_events
        if thermal_state != "ok":
            self.counters[f"thermal_{thermal_state}_frames"] += 1
        self.counters["gain_changes"] += t_events.count("gain_change")

        result, matched = MatchResult.empty(), False
        if thermal_state == "ok" and self._match_due(stamp_ns):
            try:
                result = self.matcher.match(visible, thermal)
            except InputError:
                self.counters["input_errors"] += 1
                raise
            matched = True
            self.counters["matched"] += 1
            self._last_match_ns = stamp_ns
            self.last_result = result
            self.match_latency.add(result.timings_ms.get("total", (time.perf_counter() - t0) * 1e3)
                                   if result.timings_ms else (time.perf_counter() - t0) * 1e3)
            self._update_alignment(result, tsize, events)

        H = self.held  # per-pair mode also keeps its last estimate through a thermal stall
        out = PairOutput(stamp_ns=stamp_ns, result=result, matched=matched, homography=H,
                         num_inliers=self.held_inliers if H is not None else 0,
                         alignment=self.alignment, thermal_state=thermal_state,
                         visible_size=vsize, thermal_size=tsize, events=events)
        for e in events:
            self.counters["event_" + e] += 1
        out.latency_ms = (time.perf_counter() - t0) * 1e3
        self.latency.add(out.latency_ms)
        return out

    def render(self, out: PairOutput, visible: np.ndarray, thermal: np.ndarray) -> PairOutput:
        """Add the fused image (and the match visualisation when enabled) to ``out``."""
        cfg = self.config
        t0 = time.perf_counter()
        if cfg.fuse:
            from . import fusion
            H = out.homography if out.homography is not None else scale_homography(out.thermal_size,
                                                                                    out.visible_size)
            out.fused = fusion.fuse(visible, thermal, H, mode=cfg.fusion_mode, alpha=cfg.fusion_alpha)
        if cfg.draw_matches and out.matched:
            from . import fusion
            out.matches_image = fusion.draw_matches(visible, thermal, out.result)
        self.render_latency.add((time.perf_counter() - t0) * 1e3)
        return out

    def _match_due(self, stamp_ns: int) -> bool:
        cfg = self.config
        if not cfg.rig_mode or cfg.match_rate_hz <= 0 or self.held is None or self._force_match:
            return True
        last = self._last_match_ns
        return last is None or stamp_ns < last or stamp_ns - last >= 1e9 / cfg.match_rate_hz

    def _update_alignment(self, result: MatchResult, tsize: Tuple[int, int], events: List[str]) -> None:
        """Per-pair mode: take the estimate. Rig mode: filter it in, or detect drift."""
        cfg = self.config
        H_new = result.homography
        good = H_new is not None and result.num_inliers >= cfg.min_inliers
        if not good:
            self.counters["match_failed"] += 1
            events.append("match_failed")
        if not cfg.rig_mode:
            if good:
                self.held, self.held_inliers, self.alignment = H_new, result.num_inliers, "aligned"
            else:
                self.held, self.held_inliers, self.alignment = None, 0, "unaligned"
            return
        self._force_match = False
        if not good:
            return  # keep holding what we have; one weak frame says nothing about drift
        if self.held is None:
            self.held, self.held_inliers, self.alignment = H_new, result.num_inliers, "aligned"
            events.append("aligned")
            return
        inl = result.inliers if result.inliers.shape[0] == len(result) else np.ones(len(result), bool)
        err = np.linalg.norm(project(self.held, result.thermal_points[inl]) - result.visible_points[inl],
                             axis=1)
        explained = float((err <= cfg.drift_threshold_px).mean()) if err.size else 1.0
        if explained < cfg.drift_min_explained:
            self._drift_count += 1
            if self._drift_count >= cfg.drift_confirmations:
                self.held, self.held_inliers, self.alignment = H_new, result.num_inliers, "aligned"
                self._drift_count = 0
                self.counters["realignments"] += 1
                events += ["drift_detected", "realigned"]
            else:
                self.alignment = "drift_suspected"
                self._force_match = True  # confirm on the next pair, not at match_rate_hz
                events.append("drift_suspected")
            return
        self._drift_count = 0
        self.held = blend_homographies(self.held, H_new, cfg.homography_smoothing, tsize)
        self.held_inliers = result.num_inliers
        self.alignment = "aligned"

    def stats(self) -> Dict[str, Any]:
        """Counters, latency percentiles and states, for diagnostics."""
        return {"counters": dict(self.counters), "latency_ms": self.latency.summary(),
                "match_latency_ms": self.match_latency.summary(),
                "render_latency_ms": self.render_latency.summary(), "alignment": self.alignment,
                "thermal_state": self.thermal.state, "held_inliers": self.held_inliers,
                "last_matches": len(self.last_result),
                "last_inliers": self.last_result.num_inliers}
