"""What the node does with one synchronized visible/thermal pair, as plain Python over Matcher.

The ROS node and bag evaluation both run :class:`PairPipeline`, so a bag replay exercises the
node's exact code path. It works on decoded images (numpy arrays): both decode messages with
:func:`~distillmatch_ros.image_codec.decode_pair`. Per pair it:

1. checks the thermal frame for camera realities (:class:`ThermalMonitor`): constant frames
   and frozen (repeated) frames during flat-field correction, and gain changes;
2. matches, every pair, or in *rig mode* only at ``match_rate_hz`` while holding one
   homography in between (a rigid rig's alignment hardly changes, and matching costs far more
   than warping). In rig mode the held homography is either a **calibration** loaded from a
   file (:meth:`PairPipeline.set_calibration`), or a fit to the **pooled** verified inliers of
   the distinct frames seen so far (:class:`~distillmatch_ros.calibration.FramePool`): pooled
   evidence averages the per-pair errors that a filter of per-pair estimates only smooths;
3. in rig mode, checks that the held homography still explains the current verified matches;
   when it does not (drift: a knock, a re-mount, a focus change) ``drift_confirmations`` times
   in a row, it starts a new pool (a calibration is never replaced: drift against it is
   reported, ``drift_px`` and the ``calibration_drift`` event). A calibration made by
   :meth:`PairPipeline.start_calibration` that calls itself uncertain is not switched to (the
   ``calibration_uncertain`` event): the previous calibration, or the pool, stays;
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

from . import blas_threads, fusion, verification
from . import calibration as calib
from .errors import InputError
from .evaluation import project
from .fusion import FUSION_MODES
from .options import Option, dataclass_options, setting
from .preprocess import thermal_gray
from .result import MatchResult

# The states a pair can be in; a state's index is its code in Correspondences.msg
# (ALIGNMENT_* and THERMAL_* constants, checked against the .msg file by the tests).
ALIGNMENT_STATES = ("unaligned", "aligned", "drift_suspected")
THERMAL_STATES = ("ok", "constant", "frozen")


@dataclass
class PipelineConfig:
    """Per-pair processing settings; all may change while running (see :meth:`PairPipeline.configure`).

    Each field is declared once with its range and doc (:func:`~distillmatch_ros.options.setting`);
    the node's parameters of the same names (or ``ros_name``) are derived from them."""

    rig_mode: bool = setting(True, "Hold one homography (calibration or pooled evidence), re-match at "
                             "match_rate_hz")
    match_rate_hz: float = setting(2.0, "Re-match rate in rig mode (stamp time); 0 = every pair",
                                   range=(0.0, 1000.0))
    min_inliers: int = setting(12, "Fewest inliers for a trusted homography", range=(4, 100000))
    drift_threshold_px: float = setting(8.0, "Rig mode: a match is explained by the held homography within "
                                        "this error [thermal px; scaled by the visible/thermal stretch]",
                                        range=(0.1, 10000.0))
    drift_min_explained: float = setting(0.5, "Rig mode: drift when fewer inliers than this fraction are "
                                         "explained", range=(0.0, 1.0))
    drift_confirmations: int = setting(2, "Rig mode: consecutive drift detections before re-estimating",
                                       range=(1, 100))
    homography_smoothing: float = setting(0.3, "Unused: rig mode now fits pooled evidence (kept so old "
                                          "parameter files load)", range=(0.0, 1.0))
    rig_pool_frames: int = setting(30, "Rig mode without a calibration: distinct verified frames pooled into "
                                   "the held homography", range=(1, 1000))
    background_matching: bool = setting(False, "Rig mode: re-match in a helper thread so every pair is fused "
                                        "at camera rate with the held homography")
    guide_with_held: bool = setting(True, "Match with the held homography as prior (Matcher.match_guided: one "
                                    "full-size pass on the pair aligned by it, instead of the rough pass and the "
                                    "guided ones); after a guided match that is not verified the next one is "
                                    "unguided, with one guided pass (the next pairs iterate on its fit)")
    fuse: bool = setting(True, "Produce the fused image (the node publishes it on fused/image)",
                         ros_name="publish_fused")
    fusion_mode: str = setting("alpha", "Fusion: alpha (colour-mapped blend) or structure (visible detail "
                               "over thermal base)", choices=FUSION_MODES)
    fusion_alpha: float = setting(0.5, "Fusion: thermal weight", range=(0.0, 1.0))
    draw_matches: bool = setting(False, "Draw the matches of matched pairs (the node publishes it on "
                                 "matches/image)", ros_name="publish_matches_image")
    thermal_constant_rel_std: float = setting(0.05, "Thermal check: a frame is constant below this x the "
                                              "usual std", range=(0.0, 1.0))
    thermal_frozen_frames: int = setting(2, "Thermal check: identical consecutive frames before frozen",
                                         range=(1, 1000))
    gain_change_threshold: float = setting(0.25, "Thermal check: relative jump of median or range between "
                                           "frames reported as a gain change", range=(0.0, 100.0))

    @classmethod
    def options(cls) -> Tuple[Option, ...]:
        return dataclass_options(cls)

    def changed(self, **changes: Any) -> "PipelineConfig":
        """A validated copy with ``changes``; raises ValueError on an unknown name or a bad value."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown pipeline settings: {sorted(unknown)}")
        return replace(self, **changes).validated()

    def validated(self) -> "PipelineConfig":
        """Return self (values converted to their types) after checking every setting; raises
        ValueError naming the bad one."""
        for opt in self.options():
            setattr(self, opt.name, opt.check(getattr(self, opt.name)))
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
    confidence: float = 0.0  # alignment confidence of ``homography`` in [0, 1]
    drift_px: Optional[float] = None  # rig mode: median distance of this match's inliers from the held H
    calibrated: bool = False  # ``homography`` is a rig calibration
    backend: str = ""  # inference backend of the matcher that produced ``result``
    background: Optional["PairOutput"] = None  # an earlier pair whose background match finished now


class LatencyStats:
    """Rolling percentiles of recent latencies (bounded memory)."""

    def __init__(self, window: int = 1000):
        self._values: Deque[float] = deque(maxlen=window)

    def add(self, ms: float) -> None:
        self._values.append(float(ms))

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


def scale_homography(thermal_size: Tuple[int, int], visible_size: Tuple[int, int]) -> np.ndarray:
    """Thermal -> visible by stretching the whole image (the fallback before any alignment)."""
    (tw, th), (vw, vh) = thermal_size, visible_size
    return np.diag([vw / tw, vh / th, 1.0])


class PairPipeline:
    """Processes synchronized pairs with a Matcher (or anything with ``.match(v, t)``)."""

    def __init__(self, matcher: Any, config: Optional[PipelineConfig] = None):
        self.matcher = matcher
        self.backend = str(getattr(matcher, "backend", ""))  # reported with every output
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
        self.calibration: Optional[calib.Calibration] = None  # rig mode: fuse with this, never replace it
        self.pool = calib.FramePool(self.config.rig_pool_frames)
        self.held_confidence = 0.0
        self.drift_px: Optional[float] = None
        self.session: Optional[CalibrationSession] = None
        self._bg_thread = None
        self._bg_done = None
        self._guide_next = True  # False after a guided match failed: the next one starts afresh

    def configure(self, **changes: Any) -> None:
        """Change settings at run time; unknown names or bad values raise ValueError."""
        new = self.config.changed(**changes)
        if new.rig_mode != self.config.rig_mode:
            self.reset_alignment()
        self.pool.max_frames = new.rig_pool_frames
        self.config = new
        self.thermal.cfg = new

    def reset_alignment(self) -> None:
        """Forget the held homography and the pool (the next pair is matched); a loaded
        calibration stays (it is re-applied)."""
        self.held, self.held_inliers, self.alignment = None, 0, "unaligned"
        self._drift_count, self._last_match_ns = 0, None
        self.held_confidence, self.drift_px = 0.0, None
        self.pool.clear()
        if self.calibration is not None:
            self.set_calibration(self.calibration)

    def set_calibration(self, cal: Optional[calib.Calibration]) -> None:
        """Fuse every pair with a calibrated homography (rig mode); None goes back to pooling.

        Raises CalibrationError when the calibration was made for other image sizes than the
        pairs seen so far (checked again on every pair)."""
        self.calibration = cal
        if cal is None:
            self.held, self.held_inliers, self.alignment, self.held_confidence = None, 0, "unaligned", 0.0
            return
        if self._sizes is not None:
            self._check_calibration_sizes(*self._sizes)
        self.held, self.held_inliers = np.asarray(cal.homography, np.float64), int(cal.inliers_used)
        self.alignment, self.held_confidence, self._drift_count = "aligned", 1.0, 0

    def _check_calibration_sizes(self, vsize, tsize) -> None:
        cal = self.calibration
        for name, want, got in (("thermal", cal.thermal_size, tsize), ("visible", cal.visible_size, vsize)):
            if want is not None and tuple(want) != tuple(got):
                raise calib.CalibrationError(f"the rig calibration is for a {want[0]}x{want[1]} {name} image, "
                                             f"the camera sends {got[0]}x{got[1]}")

    def start_calibration(self, frames: int, on_done=None, refine: bool = True) -> "CalibrationSession":
        """Pool the next ``frames`` verified pairs (matching every pair meanwhile) and fit them;
        ``on_done(calibration or None, error text or None)`` is called from a helper thread."""
        if frames < 2:
            raise ValueError("a calibration needs at least 2 frames")
        if self.session is not None and not self.session.done:
            raise RuntimeError(f"a calibration is already running ({self.session.progress()})")
        self.session = CalibrationSession(int(frames), on_done, refine,
                                          match_guided=getattr(self.matcher, "match_guided", None))
        return self.session

    # -- per pair -----------------------------------------------------------------------
    def process(self, visible: np.ndarray, thermal: np.ndarray, stamp_ns: int) -> PairOutput:
        """:meth:`step` then :meth:`render`: match (when due), update the alignment, fuse."""
        out = self.step(visible, thermal, stamp_ns)
        self.render(out, visible, thermal)
        return out

    def step(self, visible: np.ndarray, thermal: np.ndarray, stamp_ns: int) -> PairOutput:
        """Everything but the images: thermal checks, matching when due, alignment.

        Split from :meth:`render` so the node can publish correspondences before it spends
        time on the fused image. Raises InputError for unusable images. numpy's BLAS runs on one
        thread meanwhile: its idle workers would spin through the network's passes (blas_threads.py).
        """
        with blas_threads.one_thread():
            return self._step(visible, thermal, stamp_ns)

    def _step(self, visible: np.ndarray, thermal: np.ndarray, stamp_ns: int) -> PairOutput:
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
        session = self.session
        if session is not None and session.ready and not session.applied:
            session.applied = True
            if session.error is not None or session.result is None:
                events.append("calibration_failed")
            elif not session.result.certain:
                events.append("calibration_uncertain")  # keep what we had: never trade it for a guess
            else:
                self.set_calibration(session.result)
                events.append("calibrated")
        if self.calibration is not None and self.config.rig_mode:
            self._check_calibration_sizes(vsize, tsize)

        thermal_state, t_events = self.thermal.update(thermal)
        events += t_events
        if thermal_state != "ok":
            self.counters[f"thermal_{thermal_state}_frames"] += 1
        self.counters["gain_changes"] += t_events.count("gain_change")

        background = self._integrate_background(events)
        result, matched = MatchResult.empty(), False
        if thermal_state == "ok" and self._match_due(stamp_ns):
            if self.config.background_matching and self.config.rig_mode and self.held is not None:
                self._submit_background(visible, thermal, stamp_ns, vsize, tsize)
            elif self._bg_thread is None or not self._bg_thread.is_alive():
                t_match = time.perf_counter()
                try:
                    result = self._match(visible, thermal, self.held)
                except InputError:
                    self.counters["input_errors"] += 1
                    raise
                matched = True
                self._take_result(result, visible, thermal, stamp_ns, vsize, tsize, events, t_match)

        H = self.held  # per-pair mode also keeps its last estimate through a thermal stall
        out = PairOutput(stamp_ns=stamp_ns, result=result, matched=matched, homography=H,
                         num_inliers=self.held_inliers if H is not None else 0,
                         alignment=self.alignment, thermal_state=thermal_state,
                         visible_size=vsize, thermal_size=tsize, events=events,
                         confidence=self.held_confidence if H is not None else 0.0,
                         drift_px=self.drift_px if matched else None,
                         calibrated=self.calibration is not None and H is not None and self.config.rig_mode,
                         backend=self.backend)
        out.background = background
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
            H = out.homography if out.homography is not None else scale_homography(out.thermal_size,
                                                                                    out.visible_size)
            out.fused = fusion.fuse(visible, thermal, H, mode=cfg.fusion_mode, alpha=cfg.fusion_alpha)
        if cfg.draw_matches and out.matched:
            out.matches_image = fusion.draw_matches(visible, thermal, out.result)
        self.render_latency.add((time.perf_counter() - t0) * 1e3)
        return out

    def _take_result(self, result: MatchResult, visible, thermal, stamp_ns: int, vsize, tsize,
                     events: List[str], t_match: float, evidence_ready=None) -> None:
        """Account for a match and update the alignment (pool, calibration drift, session)."""
        self.counters["matched"] += 1
        self._last_match_ns = stamp_ns
        self.last_result = result
        self.match_latency.add(result.timings_ms.get("total", (time.perf_counter() - t_match) * 1e3)
                               if result.timings_ms else (time.perf_counter() - t_match) * 1e3)
        self.drift_px = None
        evidence = evidence_ready
        if evidence is None and visible is not None and result.homography is not None and \
                (self.config.rig_mode or self.session is not None):
            evidence = calib.evidence_from_result(result, stamp_ns, self._thermal_gray(thermal), tsize,
                                                  _gray(visible), keep_images=self.session is not None)
        self._update_alignment(result, tsize, events, evidence)
        if self.session is not None and not self.session.done and evidence is not None:
            self.session.offer(evidence, tsize, vsize, events)

    def _submit_background(self, visible, thermal, stamp_ns: int, vsize, tsize) -> None:
        """Match in a helper thread while pairs keep being fused with the held homography
        (rig mode: fusion needs no network); the result is taken in by a later :meth:`step`."""
        if self._bg_thread is not None and self._bg_thread.is_alive():
            self.counters["background_busy"] += 1
            return
        import threading
        self._last_match_ns = stamp_ns  # the rate counts from the submission
        keep = self.session is not None

        v, t = visible.copy(), thermal.copy()  # the caller's buffers may be reused meanwhile
        prior = self.held

        def run():
            t0 = time.perf_counter()
            try:
                r = self._match(v, t, prior)
                ev = None
                if r.homography is not None:
                    with blas_threads.one_thread():
                        ev = calib.evidence_from_result(r, stamp_ns, self._thermal_gray(t), tsize, _gray(v),
                                                        keep_images=keep)
                self._bg_done = (r, ev, stamp_ns, vsize, tsize, t0, None)
            except Exception as exc:  # noqa: BLE001 - reported on the next pair
                self._bg_done = (None, None, stamp_ns, vsize, tsize, t0, exc)

        self._bg_thread = threading.Thread(target=run, name="background_match", daemon=True)
        self._bg_thread.start()

    def _integrate_background(self, events: List[str]) -> Optional["PairOutput"]:
        """Take in a finished background match; returns the matched pair's own output."""
        done, self._bg_done = self._bg_done, None
        if done is None:
            return None
        result, evidence, stamp_ns, vsize, tsize, t0, exc = done
        if exc is not None:
            self.counters["input_errors" if isinstance(exc, InputError) else "background_errors"] += 1
            events.append("background_match_failed")
            return None
        if self._sizes != (vsize, tsize):
            return None  # the cameras changed meanwhile: the old match says nothing
        ev_events: List[str] = []
        self._take_result(result, None, None, stamp_ns, vsize, tsize, ev_events, t0, evidence_ready=evidence)
        events += ev_events
        H = self.held
        return PairOutput(stamp_ns=stamp_ns, result=result, matched=True, homography=H,
                          num_inliers=self.held_inliers if H is not None else 0, alignment=self.alignment,
                          thermal_state="ok", visible_size=vsize, thermal_size=tsize, events=ev_events,
                          confidence=self.held_confidence if H is not None else 0.0, drift_px=self.drift_px,
                          calibrated=self.calibration is not None and H is not None, backend=self.backend)

    def close(self, timeout: float = 30.0) -> None:
        """Wait for a background match and a calibration fit still running (clean shutdown:
        a native inference thread must not outlive the interpreter)."""
        if self._bg_thread is not None:
            self._bg_thread.join(timeout)
        if self.session is not None:
            self.session.wait(timeout)

    def _match(self, visible: np.ndarray, thermal: np.ndarray, prior: Optional[np.ndarray]) -> MatchResult:
        """The matcher's result for a pair: guided by ``prior`` (the held homography) when
        ``guide_with_held`` and the last guided match was verified, else the matcher's own.

        Why: a rig's homography changes little from pair to pair, so the held one is a better
        prior than the matcher's rough pass and costs no network time. A guided match that is
        not verified (the rig moved beyond the network's reach, or a bad frame) makes the next
        match unguided, so drift is still seen."""
        guide = getattr(self.matcher, "match_guided", None)
        if prior is None or guide is None or not self.config.guide_with_held or not self._guide_next:
            self._guide_next = True
            # With guidance by the held fit, the next pairs iterate on this one's fit at one pass
            # each: this pair needs no further guided passes (Matcher.match_for_stream).
            unguided = getattr(self.matcher, "match_for_stream", None) if self.config.guide_with_held else None
            return (unguided or self.matcher.match)(visible, thermal)
        result = guide(visible, thermal, prior)
        self._guide_next = result.homography is not None
        self.counters["guided_matches"] += 1
        return result

    def _thermal_gray(self, thermal: np.ndarray) -> np.ndarray:
        """The 8-bit thermal image the matcher sees (same normalisation options)."""
        return thermal_gray(thermal, getattr(self.matcher, "options", None))

    def _match_due(self, stamp_ns: int) -> bool:
        cfg = self.config
        calibrating = self.session is not None and not self.session.done
        if not cfg.rig_mode or cfg.match_rate_hz <= 0 or self.held is None or self._force_match or calibrating:
            return True
        last = self._last_match_ns
        return last is None or stamp_ns < last or stamp_ns - last >= 1e9 / cfg.match_rate_hz

    def _update_alignment(self, result: MatchResult, tsize: Tuple[int, int], events: List[str],
                          evidence: Optional[calib.FrameEvidence] = None) -> None:
        """Per-pair mode: take the estimate. Rig mode: pool it (or check it against a
        calibration), or detect drift."""
        cfg = self.config
        H_new = result.homography
        good = H_new is not None and result.num_inliers >= cfg.min_inliers
        if not good:
            self.counters["match_failed"] += 1
            events.append("match_failed")
        if not cfg.rig_mode:
            if good:
                self.held, self.held_inliers, self.alignment = H_new, result.num_inliers, "aligned"
                self.held_confidence = float(result.confidence)
            else:
                self.held, self.held_inliers, self.alignment, self.held_confidence = None, 0, "unaligned", 0.0
            return
        self._force_match = False
        if not good:
            return  # keep holding what we have; one weak frame says nothing about drift
        if self.held is None:
            self._pool_and_fit(evidence, result, tsize)
            events.append("aligned")
            return
        inl = result.inliers if result.inliers.shape[0] == len(result) else np.ones(len(result), bool)
        err = np.linalg.norm(project(self.held, result.thermal_points[inl]) - result.visible_points[inl],
                             axis=1)
        self.drift_px = float(np.median(err)) if err.size else None
        limit = cfg.drift_threshold_px * verification.stretch_factor(tsize, self._sizes[0])
        explained = float((err <= limit).mean()) if err.size else 1.0
        if explained < cfg.drift_min_explained:
            self._drift_count += 1
            if self.calibration is not None:  # a calibration is trusted: report, never replace
                self.alignment = "drift_suspected"
                if self._drift_count >= cfg.drift_confirmations:
                    self.counters["calibration_drift"] += 1
                    events.append("calibration_drift")
                else:
                    self._force_match = True
                    events.append("drift_suspected")
                return
            if self._drift_count >= cfg.drift_confirmations:
                self.pool.clear()
                self._pool_and_fit(evidence, result, tsize)
                self._drift_count = 0
                self.counters["realignments"] += 1
                events += ["drift_detected", "realigned"]
            else:
                self.alignment = "drift_suspected"
                self._force_match = True  # confirm on the next pair, not at match_rate_hz
                events.append("drift_suspected")
            return
        self._drift_count = 0
        self.alignment = "aligned"
        if self.calibration is None:
            self._pool_and_fit(evidence, result, tsize)

    def _pool_and_fit(self, evidence: Optional[calib.FrameEvidence], result: MatchResult,
                      tsize: Tuple[int, int]) -> None:
        """Add a verified frame to the pool and hold the pooled fit (the frame's own estimate
        while the pool has one frame, or when the pooled fit fails)."""
        self.alignment = "aligned"
        if self.calibration is not None:
            return
        self.pool.add(evidence)
        H, n = result.homography, result.num_inliers
        if len(self.pool) >= 2:
            tp, vp, _ = calib.balanced_points(self.pool.frames, 150)
            # the matcher's own fit threshold (a stand-in matcher may have no options)
            options = {**verification.FIT_DEFAULTS, **(getattr(self.matcher, "options", None) or {})}
            thr = float(options["ransac_threshold"]) * verification.stretch_factor(tsize, self._sizes[0])
            H_pool, mask = calib.robust_fit(tp, vp, thr)
            if H_pool is not None and mask.sum() >= self.config.min_inliers:
                H_pool, w = calib.irls_fit(tp, vp, H_pool, 2.0 * thr)  # every frame contributes
                H, n = H_pool, int((w > 0.2).sum())
        self.held, self.held_inliers = np.asarray(H, np.float64), n
        self.held_confidence = max(float(result.confidence), min(1.0, len(self.pool) / 10.0))

    def stats(self) -> Dict[str, Any]:
        """Counters, latency percentiles and states, for diagnostics."""
        return {"counters": dict(self.counters), "latency_ms": self.latency.summary(),
                "match_latency_ms": self.match_latency.summary(),
                "render_latency_ms": self.render_latency.summary(), "alignment": self.alignment,
                "thermal_state": self.thermal.state, "held_inliers": self.held_inliers,
                "last_matches": len(self.last_result),
                "last_inliers": self.last_result.num_inliers,
                "last_verification": self.last_result.verification,
                "last_confidence": float(self.last_result.confidence),
                "held_confidence": self.held_confidence, "drift_px": self.drift_px,
                "pool_frames": len(self.pool), "calibrated": self.calibration is not None,
                "calibration": self.session.progress() if self.session is not None else "none"}


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image


class CalibrationSession:
    """Pools the next ``frames`` verified pairs, then fits them in a helper thread (the dense
    refinement takes about a second a frame; the pipeline keeps processing meanwhile)."""

    def __init__(self, frames: int, on_done=None, refine: bool = True, match_guided=None):
        self.frames, self.on_done, self.refine = frames, on_done, refine
        self.match_guided = match_guided  # Matcher.match_guided: the second, guided pass of the pooled frames
        self.pool = calib.FramePool(max_frames=frames)
        self.offered = 0
        self.done = False
        self.fitting = False
        self.result: Optional[calib.Calibration] = None
        self.error: Optional[str] = None
        self.ready = False
        self.applied = False
        self._thread = None

    def progress(self) -> str:
        if self.error:
            return f"failed: {self.error}"
        if self.result is not None and self.ready and not self.result.certain:
            return (f"uncertain: {self.result.uncertain_because}; kept the previous alignment "
                    f"({self.result.frames_used} frames)")
        if self.result is not None and self.ready:
            return f"done: {self.result.frames_used} frames"
        if self.fitting:
            return f"fitting {len(self.pool)} frames"
        return f"pooling {self.offered}/{self.frames} verified pairs"

    def offer(self, ev: calib.FrameEvidence, tsize, vsize, events: List[str]) -> None:
        self.pool.add(ev)
        self.offered += 1
        if self.offered >= self.frames and not self.fitting:
            self.fitting = True
            self.done = True  # no more frames; the fit runs on its own
            events.append("calibration_pooled")
            import threading
            self._thread = threading.Thread(target=self._fit, args=(list(self.pool.frames), tsize, vsize),
                                            name="rig_calibration", daemon=True)
            self._thread.start()

    def _fit(self, frames, tsize, vsize) -> None:
        try:
            if self.match_guided is not None and all(f.thermal is not None and f.visible is not None for f in frames):
                # As `distillmatch calibrate`: match the pooled frames again with their pooled fit
                # as prior, and calibrate from that evidence (frames it rejects keep their own).
                prior = calib.prior_of(frames, tsize, vsize)
                again = calib.guided_pass([(f.stamp_ns, f.visible, f.thermal, f.thermal) for f in frames],
                                          self.match_guided, prior, tsize)
                frames = [ev or f for f, (_res, ev) in zip(frames, again, strict=True)]
            with blas_threads.one_thread():  # it runs beside the pair loop's network passes
                self.result = calib.fit_pooled(frames, tsize, vsize, calib.FitOptions(refine=self.refine))
        except Exception as exc:  # noqa: BLE001 - reported through progress() and on_done
            self.error = f"{type(exc).__name__}: {exc}"
        if self.on_done is not None and self.error is None:
            try:
                self.on_done(self.result, None)  # e.g. the node writes the file
            except Exception as exc:  # noqa: BLE001 - a calibration that was not saved is not used
                self.error = f"{type(exc).__name__}: {exc}"
        elif self.on_done is not None:
            self.on_done(None, self.error)
        self.fitting = False
        self.ready = True  # the pipeline switches to it on its next pair (its own thread)

    def wait(self, timeout: Optional[float] = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.result is not None or self.error is not None
