"""ROS 2 node: synchronized visible/thermal matching, alignment, fusion and diagnostics.

A thin rclpy layer over the plain-Python pieces (image_codec, sync, pipeline, Matcher), modelled
on image_pipeline's stereo nodes: parameters declared once (config/matcher.yaml, ranges and
descriptions from node_params), SensorDataQoS subscriptions whose QoS users change through the
standard ``qos_overrides.<topic>.subscription.*`` parameters, raw or image_transport
``compressed`` input per camera, an approximate-time synchronizer.

Threads: subscription callbacks only validate headers and feed the synchronizer; a completed
pair goes into a one-slot mailbox that a worker thread empties, so inference never blocks the
executor and the newest pair wins. Every pair is counted: received = processed + dropped
(+ at most one waiting and one in progress).

Run: ``ros2 run distillmatch_ros matcher_node --ros-args --params-file config/matcher.yaml`` or
``python -m distillmatch_ros.matcher_node --ros-args ...``. Works with Jazzy and Kilted rclpy.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import Trigger

from . import node_params as np_
from .calibration import CalibrationError, load_calibration, save_calibration
from .errors import BackendUnavailable, CheckpointError, InputError
from .image_codec import THERMAL_ENCODINGS, VISIBLE_ENCODINGS, ImageRejected, check_message, decode_pair, fill_image_msg
from .options import Option
from .pipeline import LatencyStats, PairPipeline, PipelineConfig
from .sync import ApproximateTimeSynchronizer, header_stamp_ns

STREAMS = ("visible", "thermal")
_ALLOWED = (VISIBLE_ENCODINGS, THERMAL_ENCODINGS)


class StartupError(RuntimeError):
    """The node cannot start (model missing, backend unusable, interface package missing)."""


def _descriptor(spec: Option) -> ParameterDescriptor:
    d = ParameterDescriptor(description=spec.doc, read_only=not spec.dynamic)
    if spec.choices:
        d.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.range is not None and isinstance(spec.default, float):
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]),
                                                     to_value=float(spec.range[1]), step=0.0)]
    elif spec.range is not None and isinstance(spec.default, int) and not isinstance(spec.default, bool):
        d.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]), step=1)]
    return d


def _import_correspondences():
    try:
        from distillmatch_msgs.msg import Correspondences
    except ImportError as exc:
        raise StartupError("the distillmatch_msgs interface package is not installed: run "
                           "scripts/build_interfaces.sh (pip/venv) or build interfaces/distillmatch_msgs "
                           f"with colcon ({exc})") from exc
    return Correspondences


class MatcherNode(Node):
    """Subscribes to two cameras, publishes correspondences, fused image and diagnostics."""

    def __init__(self, node_name: str = "matcher_node", **kwargs: Any):
        super().__init__(node_name, **kwargs)
        for spec in np_.PARAMS + np_.DEPRECATED:
            self.declare_parameter(spec.name, spec.default, _descriptor(spec))
        p = {name: self.get_parameter(name).value for name in [*np_.SPECS, *np_.DEPRECATED_SPECS]}
        for spec in np_.PARAMS + np_.DEPRECATED:  # choices are not enforced by descriptors
            problem = spec.problem(p[spec.name], strict=True)
            if problem:
                raise StartupError(f"bad parameter: {problem}")
        self._Correspondences = _import_correspondences()
        calibration = None
        if p["rig_calibration_file"]:  # before the model loads: a bad file fails fast
            try:
                calibration = load_calibration(p["rig_calibration_file"])
            except CalibrationError as exc:
                raise StartupError(f"{exc} (parameter 'rig_calibration_file')") from exc
        self.matcher = self._load_matcher(p)
        self._warm_up()
        self.pipeline = PairPipeline(self.matcher, PipelineConfig(**np_.owned_by("pipeline", p)))
        self._calibration_file = p["rig_calibration_file"]
        self._cal_params = {k: p[k] for k in ("calibration_frames", "calibration_output", "calibration_refine")}
        if calibration is not None:
            self.pipeline.set_calibration(calibration)
            if not calibration.certain:  # the user chose this file; say what it says of itself
                self.get_logger().warning(f"{self._calibration_file} says it is uncertain: "
                                          f"{calibration.uncertain_because}")
        self.sync = ApproximateTimeSynchronizer(**np_.owned_by("sync", p), streams=STREAMS)
        self.sync.register_callback(self._on_pair)
        self._sync_warn_after = float(p["sync_warn_after"])

        # Counters (guarded by _lock where the worker and callbacks both touch them).
        self._lock = threading.Condition()
        self._mailbox: Optional[Tuple[Image, Image]] = None
        self._busy = False
        self._stop = False
        self.pairs = Counter()  # received, processed, failed, dropped_newer
        self.rejected = [0, 0]  # per stream: messages refused before synchronization
        self._period_msgs = [0, 0]
        self._period_pairs = 0
        self._period_errors: List[str] = []
        self._last_pair_wall = time.monotonic()
        self._last_msg_wall = [0.0, 0.0]
        self._events: Counter = Counter()
        self._node_latency = LatencyStats()
        self._age = LatencyStats()
        self._last_diag = time.monotonic()
        self._camera_info: Optional[CameraInfo] = None
        self._recent: Dict[int, Tuple[Any, Any]] = {}  # visible stamp -> headers (background matches)

        qos = self._input_qos(p)
        overrides = QoSOverridingOptions.with_default_policies()
        self.input_topics: List[str] = []
        for i, stream in enumerate(STREAMS):
            self.input_topics.append(self._subscribe_camera(i, p[f"{stream}_transport"], qos, overrides))
        self._pub_info = None
        if p["use_camera_info"]:  # rclpy applies overrides to the profile in place: one copy each
            self.create_subscription(CameraInfo, "visible/camera_info", self._on_camera_info, QoSProfile(**qos),
                                     qos_overriding_options=overrides)
            self._pub_info = self.create_publisher(CameraInfo, "fused/camera_info", 5)
        self._pub_corr = self.create_publisher(self._Correspondences, "correspondences", 10)
        self._pub_fused = self.create_publisher(Image, "fused/image", 5)
        self._pub_matches = self.create_publisher(Image, "matches/image", 2)
        self._pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_service(Trigger, "~/calibrate", self._on_calibrate)
        self.create_timer(float(p["diagnostics_period"]), self._publish_diagnostics)

        self._worker = threading.Thread(target=self._work, name="matcher_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"matcher_node ready: model {self.matcher.model_path}, backend={self.matcher.backend} "
            f"({getattr(self.matcher, 'backend_choice', '')}), "
            f"input {self.matcher.input_size}, rig_mode={p['rig_mode']}, "
            f"calibration={self._calibration_file or 'none (pooled evidence)'}, slop={p['slop']} s, subscribing to "
            f"{self.input_topics[0]} ({p['visible_transport']}) and {self.input_topics[1]} ({p['thermal_transport']})")

    # -- start-up -----------------------------------------------------------------------
    def _input_qos(self, p: Dict[str, Any]) -> Dict[str, Any]:
        """Input QoS (as QoSProfile keyword arguments): SensorDataQoS, changed by the deprecated
        qos_reliability / qos_depth if they are set.

        The standard ``qos_overrides.<topic>.subscription.*`` parameters (declared by rclpy when
        subscribing) start from this profile and win over it.
        """
        qos = dict(history=HistoryPolicy.KEEP_LAST, depth=qos_profile_sensor_data.depth,
                   reliability=qos_profile_sensor_data.reliability,
                   durability=qos_profile_sensor_data.durability)
        topics = ", ".join(self.resolve_topic_name(f"{s}/image_raw") for s in STREAMS)
        if p["qos_reliability"]:
            qos["reliability"] = (ReliabilityPolicy.RELIABLE if p["qos_reliability"] == "reliable"
                                  else ReliabilityPolicy.BEST_EFFORT)
            self.get_logger().warning(
                "parameter qos_reliability is deprecated and will be removed in 0.3: use "
                f"qos_overrides.<topic>.subscription.reliability (topics: {topics}[/compressed])")
        if p["qos_depth"]:
            qos["depth"] = int(p["qos_depth"])
            self.get_logger().warning(
                "parameter qos_depth is deprecated and will be removed in 0.3: use "
                f"qos_overrides.<topic>.subscription.depth (topics: {topics}[/compressed])")
        return qos

    def _subscribe_camera(self, i: int, transport: str, qos: Dict[str, Any], overrides) -> str:
        """Subscribe to one camera; returns the topic. ``compressed`` follows image_transport:
        the base topic is resolved (namespace and remapping) and ``/compressed`` appended, so a
        remap of ``visible/image_raw`` also moves its compressed topic."""
        base = f"{STREAMS[i]}/image_raw"
        if transport == "compressed":
            topic, msg_type = self.resolve_topic_name(base) + "/compressed", CompressedImage
        else:
            topic, msg_type = base, Image
        self.create_subscription(msg_type, topic, lambda m: self._on_image(i, m), QoSProfile(**qos),
                                 qos_overriding_options=overrides)
        return self.resolve_topic_name(topic)

    def _load_matcher(self, p: Dict[str, Any]):
        """Load the model; any problem becomes a StartupError with the reason."""
        if p["num_threads"] > 0:
            import torch
            torch.set_num_threads(int(p["num_threads"]))
        from .matcher import Matcher
        options = np_.owned_by("matcher", p)
        model, backend, device = p["model"], p["backend"], p["device"] or None
        try:
            return Matcher.from_pretrained(model or None, backend=backend, device=device, **options)
        except (CheckpointError, BackendUnavailable, ValueError) as exc:
            raise StartupError(f"cannot load model {model or '(default)'!r} with backend {backend!r}: {exc}") \
                from exc

    def _warm_up(self) -> None:
        """Run the network twice before subscribing: first calls allocate and are several times
        slower, which would otherwise cost the first camera pairs."""
        import numpy as np
        w, h = self.matcher.input_size
        rng = np.random.default_rng(0)
        for _ in range(2):
            self.matcher.match(rng.integers(0, 255, (h, w), dtype=np.uint8),
                               rng.integers(0, 255, (h, w), dtype=np.uint8))

    # -- callbacks (executor thread) ----------------------------------------------------
    def _on_image(self, i: int, msg: Any) -> None:
        """Validate the header (or compressed format) cheaply and hand the message to the
        synchronizer; pixels are decoded in the worker, only for pairs that get processed."""
        self._period_msgs[i] += 1
        self._last_msg_wall[i] = time.monotonic()
        try:
            check_message(msg, _ALLOWED[i])
        except InputError as exc:
            self._report_error(f"{STREAMS[i]} image rejected: {exc}", i)
            return
        self.sync.add(i, msg)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def _on_pair(self, visible: Image, thermal: Image) -> None:
        """Put the pair in the mailbox; a pair still waiting there is dropped (newest wins)."""
        with self._lock:
            self.pairs["received"] += 1
            self._period_pairs += 1
            self._last_pair_wall = time.monotonic()
            if self._mailbox is not None:
                self.pairs["dropped_newer"] += 1
            self._mailbox = (visible, thermal)
            self._lock.notify()

    def _report_error(self, text: str, stream: Optional[int] = None) -> None:
        with self._lock:
            if stream is not None:
                self.rejected[stream] += 1
            self._period_errors.append(text)
            del self._period_errors[:-20]
        self.get_logger().warning(text, throttle_duration_sec=1.0)

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Route run-time changes to the settings' owners (Matcher, pipeline, synchronizer, this
        node), which validate them; one bad value refuses the whole set, nothing applied."""
        changes = {}
        for param in params:
            spec = np_.SPECS.get(param.name)
            if spec is None:
                continue  # e.g. use_sim_time: rclpy handles it
            try:  # ROS types (and choices, which descriptors do not enforce), before any owner sees it
                changes[param.name] = spec.check(param.value, strict=True)
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        pipe, opts = np_.owned_by("pipeline", changes), np_.owned_by("matcher", changes)
        try:
            self.pipeline.config.changed(**pipe)
            self.matcher.checked_options(**opts)
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if pipe:
            self.pipeline.configure(**pipe)
        if opts:
            self.matcher.set_options(**opts)
        for name, value in np_.owned_by("sync", changes).items():
            setattr(self.sync, name, value)
        if "sync_warn_after" in changes:
            self._sync_warn_after = changes["sync_warn_after"]
        for k in self._cal_params:
            if k in changes:
                self._cal_params[k] = changes[k]
        if changes:
            self.get_logger().info("parameters changed: " + ", ".join(f"{k}={v}" for k, v in changes.items()))
        return SetParametersResult(successful=True)

    def _on_calibrate(self, request, response):
        """~/calibrate: pool the next ``calibration_frames`` verified pairs, fit them (helper
        thread), write the file and switch to it. Answers at once; progress is on /diagnostics."""
        path = self._cal_params["calibration_output"] or self._calibration_file or "rig_calibration.yaml"
        path = str(Path(path).expanduser().resolve())
        frames = int(self._cal_params["calibration_frames"])

        def done(cal, error):
            if cal is None:
                self._report_error(f"calibration failed: {error}")
                return
            cal.model = str(getattr(self.matcher, "model_path", "") or "")
            cal.source = {"node": self.get_fully_qualified_name(),
                          "visible_topic": self.resolve_topic_name("visible/image_raw"),
                          "thermal_topic": self.resolve_topic_name("thermal/image_raw")}
            unc = cal.corner_uncertainty_px.get("mean")
            if not cal.certain:  # kept for inspection, beside the file in use, which stays as it is
                side = str(Path(path).with_suffix("")) + ".uncertain.yaml"
                save_calibration(side, cal)
                self.get_logger().warning(f"rig calibration uncertain ({cal.uncertain_because}); written to {side}, "
                                          f"not used: keeping {self._calibration_file or 'the pooled evidence'}")
                return
            save_calibration(path, cal)
            self._calibration_file = path
            self.get_logger().info(f"rig calibration written to {path} from {cal.frames_used} frames "
                                   f"(corner uncertainty {unc} px); fusing with it")

        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            if not os.access(Path(path).parent, os.W_OK):
                raise ValueError(f"cannot write to {Path(path).parent}")
            self.pipeline.start_calibration(frames, done, bool(self._cal_params["calibration_refine"]))
        except (ValueError, RuntimeError, OSError) as exc:
            response.success, response.message = False, f"calibration not started: {exc}"
            return response
        response.success = True
        response.message = (f"pooling the next {frames} verified pairs; the calibration will be written to "
                            f"{path} and used (progress: 'calibration' on /diagnostics)")
        self.get_logger().info(response.message)
        return response

    # -- worker thread ------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._lock:
                while self._mailbox is None and not self._stop:
                    self._lock.wait()
                if self._stop:
                    return
                visible, thermal = self._mailbox
                self._mailbox = None
                self._busy = True
            t0 = time.perf_counter()
            try:
                self._process(visible, thermal)
                ok = True
            except ImageRejected as exc:
                self._report_error(str(exc), STREAMS.index(exc.stream))
                ok = False
            except InputError as exc:
                self._report_error(f"pair rejected: {exc}")
                ok = False
            except Exception as exc:  # noqa: BLE001 - keep running, report it
                self._report_error(f"processing failed: {type(exc).__name__}: {exc}")
                ok = False
            with self._lock:
                self.pairs["processed"] += 1
                if not ok:
                    self.pairs["failed"] += 1
                self._busy = False
            if ok:
                self._node_latency.add((time.perf_counter() - t0) * 1e3)

    def _process(self, visible: Any, thermal: Any) -> None:
        """Correspondences first (what fusion stacks wait for), then the images."""
        vis_img, th_img = decode_pair(visible, thermal)
        out = self.pipeline.step(vis_img, th_img, header_stamp_ns(visible))
        for e in out.events + (out.background.events if out.background is not None else []):
            self._events[e] += 1
            if e in ("thermal_constant", "thermal_frozen", "gain_change", "drift_detected", "drift_suspected",
                     "calibration_drift", "calibration_failed", "calibration_uncertain"):
                self.get_logger().warning(f"{e} (stamp {out.stamp_ns / 1e9:.3f})", throttle_duration_sec=1.0)
        header = visible.header
        self._recent[out.stamp_ns] = (visible.header, thermal.header)
        while len(self._recent) > 64:
            self._recent.pop(next(iter(self._recent)))
        if out.background is not None:  # an earlier pair's background match: its own message
            headers = self._recent.get(out.background.stamp_ns)
            if headers is not None:
                self._publish_correspondences(out.background, *headers)
        self._publish_correspondences(out, visible.header, thermal.header)
        age_ns = self.get_clock().now().nanoseconds - header_stamp_ns(visible)
        if 0 <= age_ns < 60e9:
            self._age.add(age_ns / 1e6)
        self.pipeline.render(out, vis_img, th_img)
        if out.fused is not None:
            img = fill_image_msg(Image(), out.fused, "bgr8")
            img.header = header
            self._pub_fused.publish(img)
            info = self._camera_info
            if self._pub_info is not None and info is not None:
                info.header = header
                self._pub_info.publish(info)
        if out.matches_image is not None:
            img = fill_image_msg(Image(), out.matches_image, "bgr8")
            img.header = header
            self._pub_matches.publish(img)

    def _publish_correspondences(self, out, visible_header, thermal_header) -> None:
        from .correspondences import correspondence_fields
        msg = self._Correspondences()
        for k, v in correspondence_fields(out).items():
            setattr(msg, k, v)
        msg.header = visible_header
        msg.thermal_stamp = thermal_header.stamp
        msg.thermal_frame_id = thermal_header.frame_id
        self._pub_corr.publish(msg)

    # -- diagnostics --------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        """Publish input rates, sync drops, latency, alignment state (and warnings) on /diagnostics."""
        now = time.monotonic()
        dt = max(now - self._last_diag, 1e-6)
        self._last_diag = now
        with self._lock:
            msgs, self._period_msgs = self._period_msgs, [0, 0]
            npairs, self._period_pairs = self._period_pairs, 0
            errors, self._period_errors = self._period_errors, []
            pairs = dict(self.pairs)
            waiting, busy = int(self._mailbox is not None), int(self._busy)
        s = self.sync.stats()
        ps = self.pipeline.stats()
        lat, mlat, age = self._node_latency.summary(), ps["match_latency_ms"], self._age.summary()

        inp = DiagnosticStatus(name=f"{self.get_name()}: input", hardware_id=self.get_fully_qualified_name())
        level, text = DiagnosticStatus.OK, "ok"
        both_live = all(now - t < self._sync_warn_after for t in self._last_msg_wall)
        if both_live and now - self._last_pair_wall > self._sync_warn_after:
            v, t = self.sync.newest_stamps_ns()
            gap = abs(v - t) / 1e9 if v is not None and t is not None else float("nan")
            level, text = DiagnosticStatus.WARN, (
                f"streams do not synchronize: no pair for {now - self._last_pair_wall:.1f} s, newest stamps "
                f"differ by {gap:.3f} s (slop {self.sync.slop:.3f} s)")
        if errors:
            level, text = DiagnosticStatus.WARN, f"{len(errors)} bad input(s): {errors[-1]}"
        inp.level, inp.message = level, text
        kv = {"visible_rate_hz": msgs[0] / dt, "thermal_rate_hz": msgs[1] / dt, "pair_rate_hz": npairs / dt,
              "sync_slop_s": self.sync.slop, "sync_queue_size": self.sync.queue_size}
        for name in STREAMS:
            st = s[name]
            kv[f"{name}_received"] = st["received"]
            kv[f"{name}_queued"] = st["queued"]
            for reason, n in st["dropped_by_reason"].items():
                kv[f"{name}_sync_dropped_{reason}"] = n
        for i, name in enumerate(STREAMS):
            kv[f"{name}_rejected"] = self.rejected[i]
        if errors:
            kv["last_error"] = errors[-1]
        inp.values = [KeyValue(key=k, value=_fmt(v)) for k, v in kv.items()]

        proc = DiagnosticStatus(name=f"{self.get_name()}: processing", hardware_id=self.get_fully_qualified_name())
        failing = pairs.get("failed", 0) and errors and any(e.startswith("processing failed") for e in errors)
        state_warn = ps["thermal_state"] != "ok" or ps["alignment"] == "drift_suspected" or \
            ps["calibration"].startswith(("failed", "uncertain"))
        proc.level = DiagnosticStatus.ERROR if failing else DiagnosticStatus.WARN if state_warn else DiagnosticStatus.OK
        drift = ps["drift_px"]
        proc.message = (f"alignment {ps['alignment']}"
                        + (" (calibrated)" if ps["calibrated"] else f" (pooled from {ps['pool_frames']} frames)")
                        + (f", drift {drift:.1f} px" if drift is not None else "")
                        + f", confidence {ps['held_confidence']:.2f}, thermal {ps['thermal_state']}, "
                        f"{ps['last_inliers']}/{ps['last_matches']} inliers, latency p50 {lat['p50']:.1f} ms")
        counters = ps["counters"]
        kv = {"backend": self.matcher.backend, "backend_choice": getattr(self.matcher, "backend_choice", ""),
              "alignment_state": ps["alignment"],
              "thermal_state": ps["thermal_state"], "matches": ps["last_matches"], "inliers": ps["last_inliers"],
              "held_inliers": ps["held_inliers"], "latency_p50_ms": lat["p50"], "latency_p95_ms": lat["p95"],
              "match_latency_p50_ms": mlat["p50"], "match_latency_p95_ms": mlat["p95"],
              "render_latency_p50_ms": ps["render_latency_ms"]["p50"],
              "pair_age_p50_ms": age["p50"], "pair_age_p95_ms": age["p95"],
              "pairs_received": pairs.get("received", 0), "pairs_processed": pairs.get("processed", 0),
              "pairs_failed": pairs.get("failed", 0), "pairs_dropped": pairs.get("dropped_newer", 0),
              "pairs_waiting": waiting, "pairs_in_progress": busy,
              "matched_pairs": counters.get("matched", 0), "realignments": counters.get("realignments", 0),
              "thermal_constant_frames": counters.get("thermal_constant_frames", 0),
              "thermal_frozen_frames": counters.get("thermal_frozen_frames", 0),
              "gain_changes": counters.get("gain_changes", 0), "match_failed": counters.get("match_failed", 0),
              "alignment_confidence": float(ps["held_confidence"]), "last_verification": ps["last_verification"],
              "last_match_confidence": float(ps["last_confidence"]),
              "drift_px": float("nan") if drift is None else float(drift),
              "calibration_drift": counters.get("calibration_drift", 0), "calibrated": ps["calibrated"],
              "calibration_file": self._calibration_file or "", "pool_frames": ps["pool_frames"],
              "calibration": ps["calibration"]}
        proc.values = [KeyValue(key=k, value=_fmt(v)) for k, v in kv.items()]

        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [inp, proc]
        self._pub_diag.publish(arr)

    def stop(self) -> None:
        """Stop the worker thread (waits for the pair in progress)."""
        with self._lock:
            self._stop = True
            self._lock.notify_all()
        self._worker.join(timeout=10.0)
        self.pipeline.close(timeout=30.0)


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def main(args: Optional[List[str]] = None) -> int:
    """Run the node until Ctrl-C / shutdown; exit code 2 when it cannot start."""
    rclpy.init(args=args)
    node: Optional[MatcherNode] = None
    code = 0
    try:
        node = MatcherNode()
        rclpy.spin(node)
    except StartupError as exc:
        rclpy.logging.get_logger("matcher_node").fatal(str(exc))
        code = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:  # noqa: BLE001 - only when it is the shutdown itself
        # SIGINT shuts the context down from rclpy's signal handler; when that lands while spin
        # builds its wait set, rclpy raises RCLError ("the given context is not valid") instead
        # of ExternalShutdownException. After a shutdown that is the shutdown, not a failure.
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
