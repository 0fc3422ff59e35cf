"""Helpers for tests and benchmarks that run matcher_node as a real process and talk to it over DDS.

DDS stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, a random ROS_DOMAIN_ID per
test session) and uses the shipped shared-memory profile, as the README tells users to.
"""
from __future__ import annotations

import array
import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]  # the source checkout: distillmatch_ros/testing/ is two levels down
PARAMS_FILE = ROOT / "config" / "matcher.yaml"
SHM_PROFILE = ROOT / "config" / "fastdds_shm.xml"

# One random domain per test session; child processes (benchmarks, soak) inherit it.
_DOMAIN = int(os.environ.get("DM_TEST_DOMAIN_ID") or random.Random().randint(1, 100))
os.environ["DM_TEST_DOMAIN_ID"] = str(_DOMAIN)


def ros_env() -> Dict[str, str]:
    """Environment of this test session's DDS world (set in os.environ too, before rclpy.init)."""
    env = {"ROS_DOMAIN_ID": str(_DOMAIN), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "ROS_PYTHON_CHECK_FIELDS": "1", "FASTDDS_DEFAULT_PROFILES_FILE": str(SHM_PROFILE),
           "RCUTILS_LOGGING_BUFFERED_STREAM": "0",
           "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    os.environ.update(env)
    return env


def interfaces_available() -> bool:
    try:
        import distillmatch_msgs.msg  # noqa: F401
        return True
    except ImportError:
        return False


def requires_node():
    """The pytest mark of tests that run matcher_node: skip, with the reason, when the interface
    package or rclpy is missing."""
    import importlib.util

    import pytest
    missing = ("distillmatch_msgs not built: run scripts/build_interfaces.sh" if not interfaces_available()
               else "rclpy is not installed" if importlib.util.find_spec("rclpy") is None else "")
    return pytest.mark.skipif(bool(missing), reason=missing)


def make_test_checkpoint(path: Path) -> Path:
    """A random-weight tiny model at a small working size (fast on CI CPUs)."""
    import torch
    torch.set_num_threads(1)
    from distillmatch_ros.checkpoint import save_checkpoint
    from distillmatch_ros.model import build_model
    torch.manual_seed(0)
    model = build_model("tiny", pretrained_backbone=False, input_size=[160, 128], coarse_layers=2)
    return save_checkpoint(path, model, {"name": "random-test", "note": "random weights, tests only"})


def bench_model(name: str, tmp: Path) -> Path:
    """Model for benchmarks: a path, "" (the shipped default), "random-tiny" (the shipped tiny
    architecture with random weights: same compute) or "random" (the small test model)."""
    if name == "random":
        return make_test_checkpoint(tmp / "random_small.pt")
    if name == "random-tiny":
        import torch

        from distillmatch_ros.checkpoint import save_checkpoint
        from distillmatch_ros.model import build_model
        torch.manual_seed(0)
        return save_checkpoint(tmp / "random_tiny_preset.pt", build_model("tiny", pretrained_backbone=False),
                               {"name": "random weights, tiny preset (benchmarks only)"})
    if name:
        return Path(name)
    from distillmatch_ros.matcher import resolve_model
    return resolve_model()


class NodeProcess:
    """``python -m distillmatch_ros.matcher_node --ros-args --params-file ... -r ...`` as a child."""

    def __init__(self, tmp: Path, params: Dict[str, Any], namespace: str = "/dm_test",
                 remaps: Optional[Dict[str, str]] = None, name: str = "node"):
        self.tmp, self.namespace = Path(tmp), namespace
        override = self.tmp / f"{name}_params.yaml"
        override.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
        cmd = [sys.executable, "-m", "distillmatch_ros.matcher_node", "--ros-args",
               "--params-file", str(PARAMS_FILE), "--params-file", str(override),
               "-r", f"__ns:={namespace}"]
        for a, b in (remaps or {}).items():
            cmd += ["-r", f"{a}:={b}"]
        self.log_path = self.tmp / f"{name}.log"
        env = dict(os.environ, **ros_env())
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=str(self.tmp))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "matcher_node ready" in self.log():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"node not ready after {timeout} s:\n{self.log()[-3000:]}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    @contextlib.contextmanager
    def session(self, namespace: str):
        """``with proc.session(ns) as tester``: wait until the node is ready, yield a connected
        :class:`Tester`; afterwards close it and require a clean exit on Ctrl-C."""
        tester = None
        try:
            self.wait_ready()
            tester = Tester(namespace)
            tester.wait_connected()
            yield tester
        finally:
            if tester is not None:
                tester.close()
            code = self.stop()
            assert code == 0, f"node exit code {code} on SIGINT:\n{self.log()[-2000:]}"

    def serve(self):
        """For a pytest fixture: ``yield from proc.serve()`` waits until ready, yields the node,
        and on teardown stops it and requires a clean exit on Ctrl-C."""
        try:
            self.wait_ready()
            yield self
        finally:
            code = self.stop()
            assert code == 0, f"node exit code {code} on SIGINT:\n{self.log()[-2000:]}"

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        return float("nan")

    def stop(self, timeout: float = 20.0) -> int:
        """Ctrl-C (SIGINT) and wait; returns the exit code (kills it if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired as exc:
                self.proc.kill()
                self.proc.wait()
                self._log.close()
                raise AssertionError(f"node did not stop on SIGINT within {timeout} s") from exc
        self._log.close()
        return self.proc.returncode


class Tester:
    """The test's own ROS node: publishes camera pairs, records what the matcher node publishes."""

    __test__ = False  # not a test class

    def __init__(self, namespace: str = "/dm_test", reliable: bool = True,
                 compressed_topics: Optional[Tuple[str, str]] = None):
        """``compressed_topics``: (visible, thermal) CompressedImage topics to publish on
        instead of the raw ``visible/image_raw`` and ``thermal/image_raw``."""
        ros_env()
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from distillmatch_msgs.msg import Correspondences
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image
        self.ctx = rclpy.context.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node(f"tester_{os.getpid()}", namespace=namespace, context=self.ctx)
        rel = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
        qos = QoSProfile(depth=50, reliability=rel)
        self.compressed = compressed_topics is not None
        if self.compressed:
            self.pub_vis = self.node.create_publisher(CompressedImage, compressed_topics[0], qos)
            self.pub_th = self.node.create_publisher(CompressedImage, compressed_topics[1], qos)
        else:
            self.pub_vis = self.node.create_publisher(Image, "visible/image_raw", qos)
            self.pub_th = self.node.create_publisher(Image, "thermal/image_raw", qos)
        self.pub_info = self.node.create_publisher(CameraInfo, "visible/camera_info", qos)
        self.lock = threading.Lock()
        self.got: Dict[str, List[Any]] = {"corr": [], "fused": [], "diag": [], "info": [], "matches": []}
        self.arrival_ns: Dict[str, int] = {}  # receipt time of the newest message per key
        deep = QoSProfile(depth=1000)
        self.node.create_subscription(Correspondences, "correspondences", lambda m: self._keep("corr", m), deep)
        self.node.create_subscription(Image, "fused/image", lambda m: self._keep("fused", m), deep)
        self.node.create_subscription(Image, "matches/image", lambda m: self._keep("matches", m), deep)
        self.node.create_subscription(CameraInfo, "fused/camera_info", lambda m: self._keep("info", m), deep)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: self._keep("diag", m), deep)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            while self.ctx.ok():
                self.executor.spin_once(timeout_sec=0.05)
        except Exception:  # noqa: BLE001 - context shut down during spin
            pass

    def _keep(self, key: str, msg: Any) -> None:
        now = time.time_ns()  # the ROS system clock, as used for stamps
        with self.lock:
            self.got[key].append(msg)
            self.arrival_ns[key] = now

    def take(self, key: str) -> List[Any]:
        with self.lock:
            out, self.got[key] = self.got[key], []
            return out

    def peek(self, key: str) -> List[Any]:
        with self.lock:
            return list(self.got[key])

    def wait_for(self, pred: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what or pred}")

    def wait_connected(self, timeout: float = 30.0) -> None:
        ns = self.node.get_namespace().rstrip("/")
        self.wait_for(lambda: self.pub_vis.get_subscription_count() > 0 and
                      self.pub_th.get_subscription_count() > 0 and
                      self.node.count_publishers(f"{ns}/correspondences") > 0 and
                      self.node.count_publishers(f"{ns}/fused/image") > 0, timeout, "node subscriptions")
        time.sleep(1.0)  # graph discovery precedes the endpoints' matching by a little

    def image(self, img: np.ndarray, enc: str, stamp_ns: int, frame: str, **override: Any):
        """An Image (or, for a compressed tester, a CompressedImage as image_transport's
        compressed plugin makes it: JPEG for 8 bits, PNG for 16) of ``img`` in encoding ``enc``."""
        from sensor_msgs.msg import CompressedImage, Image

        from distillmatch_ros.image_codec import encode_compressed, fill_image_msg
        if self.compressed:
            msg = CompressedImage()
            msg.format, payload = encode_compressed(img, enc)
            msg.data = array.array("B", payload)
        else:
            msg = fill_image_msg(Image(), img, enc)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
        msg.header.frame_id = frame
        for k, v in override.items():
            setattr(msg, k, v)
        return msg

    def publish_pair(self, vis: np.ndarray, th: np.ndarray, stamp_ns: Optional[int] = None,
                     th_stamp_ns: Optional[int] = None, vis_enc: str = "bgr8", th_enc: str = "mono16") -> int:
        """Publish a pair; ``stamp_ns=None`` stamps it "now", after the messages are built."""
        mv = self.image(vis, vis_enc, 0, "visible_optical")
        mt = self.image(th, th_enc, 0, "thermal_optical")
        if stamp_ns is None:
            stamp_ns = self.now_ns()
        mv.header.stamp.sec, mv.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
        t_st = stamp_ns if th_stamp_ns is None else th_stamp_ns
        mt.header.stamp.sec, mt.header.stamp.nanosec = divmod(int(t_st), 1_000_000_000)
        self.pub_vis.publish(mv)
        self.pub_th.publish(mt)
        return stamp_ns

    def diag_values(self, min_stamp_ns: int = 0) -> Optional[Dict[str, Any]]:
        """Key/values and levels of the newest /diagnostics message from the matcher node."""
        history = self.diag_history(min_stamp_ns)
        return history[-1] if history else None

    def diag_history(self, min_stamp_ns: int = 0) -> List[Dict[str, Any]]:
        """Every matcher-node /diagnostics message stamped at or after ``min_stamp_ns``, oldest
        first. A bad input is reported in the one diagnostics period it arrived in, so a check
        for it must look at all periods since it was sent, not only the newest."""
        found: List[Dict[str, Any]] = []
        for arr in reversed(self.peek("diag")):
            stamp = arr.header.stamp.sec * 1_000_000_000 + arr.header.stamp.nanosec
            if stamp < min_stamp_ns:
                break
            out: Dict[str, Any] = {}
            for st in arr.status:
                if "matcher_node" not in st.name:
                    continue
                kind = st.name.split(": ")[-1]
                level = st.level
                out[f"{kind}.level"] = int.from_bytes(level, "little") if isinstance(level, bytes) else int(level)
                out[f"{kind}.message"] = st.message
                out.update({kv.key: kv.value for kv in st.values})
            if out:
                found.append(out)
        return found[::-1]

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def close(self) -> None:
        import rclpy
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)
        self._thread.join(timeout=5.0)


def vary(thermal: np.ndarray, k: int) -> np.ndarray:
    """A distinct thermal frame per publish (offset by k % 1000 counts): a real camera never
    repeats a frame exactly, and the node treats repeated frames as a frozen camera."""
    return thermal + np.asarray(k % 1000, thermal.dtype)


def textured_pair(k: int, vis_size=(320, 256), th_size=(160, 128), H=None, seed: int = 0):
    """A visible image (bgr8) and a thermal image (mono16) that is its warp by H^-1 (+ noise).

    H maps thermal to visible pixels; default: a scale with a small shift.
    """
    import cv2
    rng = np.random.default_rng(seed * 1000 + k)
    vw, vh = vis_size
    tw, th = th_size
    base = cv2.GaussianBlur(rng.random((vh, vw)).astype(np.float32), (0, 0), 3)
    base = cv2.normalize(base, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    vis = cv2.merge([base, base, base])
    if H is None:
        H = np.array([[vw / tw, 0, 3.0], [0, vh / th, 2.0], [0, 0, 1.0]])
    thermal8 = cv2.warpPerspective(base, np.linalg.inv(H), (tw, th), flags=cv2.INTER_LINEAR)
    thermal = (thermal8.astype(np.uint16) * 40 + 3000 + rng.integers(0, 20, (th, tw))).astype(np.uint16)
    return vis, thermal, H
