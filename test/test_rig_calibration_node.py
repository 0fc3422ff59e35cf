"""matcher_node with rig calibrations, as a real process:

* a calibration file is loaded and every pair is fused with it at camera rate (the network runs
  only at match_rate_hz), and a *wrong* file is reported as drift on /diagnostics;
* ``~/calibrate`` (std_srvs/Trigger) pools the next verified pairs, writes the file and
  switches to it; an uncertain result is written beside it and not used.

The shipped model is needed: drift and calibration need real, verified matches, which the
random-weight test model cannot give.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import yaml

from distillmatch_ros.testing.node_harness import (
    NodeProcess,
    requires_node,
    ros_env,
    textured_pair,
    vary,
)

pytestmark = requires_node()

MS = 1_000_000
VIS, TH = (640, 512), (320, 256)
H_TRUE = np.array([[2.0, 0.0, 6.0], [0.0, 2.0, 4.0], [0.0, 0.0, 1.0]])


def corner_err(Ha, Hb):
    from distillmatch_ros.calibration import corner_distance
    return corner_distance(Ha, Hb, TH)


def _write_cal(path, H):
    from distillmatch_ros.calibration import Calibration, save_calibration
    save_calibration(str(path), Calibration(homography=H, thermal_size=TH, visible_size=VIS, frames_used=5,
                                            inliers_used=500))
    return path


def _publish(tester, n, rate_hz, start_ns, seed=0):
    stamps = []
    for k in range(n):
        vis, th, _ = textured_pair(k % 4, vis_size=VIS, th_size=TH, H=H_TRUE, seed=seed)
        st = start_ns + int(k * 1e9 / rate_hz)
        tester.publish_pair(vis, vary(th, k), st)
        stamps.append(st)
        time.sleep(1.0 / rate_hz)
    return stamps


def _diag(tester, since_ns, key, pred, timeout=30.0):
    def ok():
        return any(key in d and pred(d[key]) for d in tester.diag_history(since_ns))
    tester.wait_for(ok, timeout, f"diagnostics {key}")
    return [d for d in tester.diag_history(since_ns) if key in d][-1]


def test_calibration_file_fuses_every_pair_and_a_wrong_file_is_drift(tmp_path, shipped_model):
    ros_env()
    wrong = H_TRUE.copy()
    wrong[0, 2] += 40.0  # the file says 20 thermal px further right than the rig really is
    cal = _write_cal(tmp_path / "rig.yaml", wrong)
    ns = "/dm_rigcal"
    proc = NodeProcess(tmp_path, {"model": str(shipped_model), "backend": "onnxruntime", "num_threads": 1,
                                  "rig_mode": True, "rig_calibration_file": str(cal), "match_rate_hz": 2.0,
                                  "qos_reliability": "reliable", "diagnostics_period": 0.5,
                                  "drift_confirmations": 2}, namespace=ns, name="rigcal")
    with proc.session(ns) as tester:
        assert "calibration=" + str(cal) in proc.log()
        t0 = tester.now_ns()
        stamps = _publish(tester, 30, 10.0, t0)  # 3 s at 10 Hz
        # Every pair the worker takes is fused; a pair arriving while the network runs on the
        # previous one is dropped (newest wins), so count what was processed.
        _diag(tester, t0, "pairs_received", lambda v: int(v) >= len(stamps))
        tester.wait_for(lambda: (lambda d: d and d["pairs_waiting"] == "0" and d["pairs_in_progress"] == "0"
                                 and int(d["pairs_received"]) >= len(stamps))(tester.diag_values(t0)),
                        60, "the node to be idle")
        time.sleep(0.5)
        d = tester.diag_values(t0)
        corr, fused = tester.take("corr"), tester.take("fused")
        processed = int(d["pairs_processed"])
        assert int(d["pairs_received"]) == len(stamps) == processed + int(d["pairs_dropped"])
        per_pair = [m for m in corr if not m.matched]  # background matches come as extra messages
        assert len(per_pair) + sum(1 for m in corr if m.matched and m.alignment_state == 0) >= processed - 1
        assert len(fused) == processed >= 0.8 * len(stamps), (len(corr), len(fused), d)
        # fused at camera rate with the file's homography; the network ran only on a few pairs
        assert all(m.homography_valid and m.calibrated for m in corr)
        assert all(np.allclose(np.asarray(m.homography).reshape(3, 3), wrong / wrong[2, 2]) for m in corr)
        assert all(m.alignment_confidence == pytest.approx(1.0) for m in corr if m.alignment_state == 1)
        matched = [m for m in corr if m.matched]
        assert 2 <= len(matched) < len(corr) // 2
        assert all(m.verification for m in matched)
        # the wrong file is reported as drift, with its size
        d = _diag(tester, t0, "calibration_drift", lambda v: int(v) >= 1)
        assert d["calibrated"] == "True" and d["alignment_state"] == "drift_suspected"
        assert float(d["drift_px"]) > 20.0  # ~40 visible px off
        assert any(m.alignment_state == 2 for m in corr)
        assert any(np.isfinite(m.drift_px) and m.drift_px > 20.0 for m in matched)
        assert proc.alive()


def _request_calibration(tester, ns):
    """Call ``~/calibrate`` and check that it accepted; (client, the answered future)."""
    from std_srvs.srv import Trigger
    cli = tester.node.create_client(Trigger, f"{ns}/matcher_node/calibrate")
    assert cli.wait_for_service(timeout_sec=20)
    fut = cli.call_async(Trigger.Request())
    tester.wait_for(fut.done, 20, "calibrate reply")
    assert fut.result().success, fut.result().message
    return cli, fut


def test_calibrate_service_pools_writes_and_switches(tmp_path, shipped_model):
    from std_srvs.srv import Trigger
    ros_env()
    out = tmp_path / "calibrated.yaml"
    ns = "/dm_rigsrv"
    proc = NodeProcess(tmp_path, {"model": str(shipped_model), "backend": "onnxruntime", "num_threads": 1,
                                  "rig_mode": True, "match_rate_hz": 2.0, "calibration_frames": 6,
                                  "calibration_output": str(out), "calibration_refine": True,
                                  "qos_reliability": "reliable", "diagnostics_period": 0.5},
                       namespace=ns, name="rigsrv")
    with proc.session(ns) as tester:
        cli, fut = _request_calibration(tester, ns)
        assert str(out) in fut.result().message
        fut2 = cli.call_async(Trigger.Request())  # a second request while pooling is refused
        tester.wait_for(fut2.done, 20, "second calibrate reply")
        assert not fut2.result().success and "already running" in fut2.result().message
        t0 = tester.now_ns()
        for rnd in range(4):  # pairs until the file is there (each pair of a new scene)
            _publish(tester, 6, 2.0, tester.now_ns(), seed=rnd + 1)
            if out.exists():
                break
        tester.wait_for(out.exists, 60, "the calibration file")
        data = yaml.safe_load(out.read_text())
        H = np.array(data["homography"])
        assert data["thermal_size"] == list(TH) and data["visible_size"] == list(VIS)
        assert data["frames_used"] >= 2 and data["inliers_used"] > 0
        assert corner_err(H, H_TRUE) < 3.0
        # The node switches on its next pair after the fit (its own thread), as a camera keeps
        # sending them; the fit (a guided pass, then the refinement) may end after the last one.
        for _ in range(30):
            if any(d.get("calibrated") == "True" for d in tester.diag_history(t0)):
                break
            _publish(tester, 1, 1.0, tester.now_ns(), seed=8)
        d = _diag(tester, t0, "calibrated", lambda v: v == "True", timeout=30)
        assert d["calibration_file"] == str(out)
        tester.take("corr")
        _publish(tester, 3, 5.0, tester.now_ns(), seed=9)
        tester.wait_for(lambda: len(tester.peek("corr")) >= 3, 30, "correspondences after switching")
        assert any(m.calibrated for m in tester.take("corr"))


def test_an_uncertain_calibration_does_not_replace_the_one_in_use(tmp_path, shipped_model):
    """~/calibrate without the dense refinement cannot check the matcher's shared bias, so its
    result says it is uncertain: the node writes it beside the file in use, reports
    ``calibration: uncertain`` on /diagnostics and keeps fusing with the previous calibration."""
    ros_env()
    previous = _write_cal(tmp_path / "rig.yaml", H_TRUE)
    before = previous.read_text()
    ns = "/dm_riguncertain"
    proc = NodeProcess(tmp_path, {"model": str(shipped_model), "backend": "onnxruntime", "num_threads": 1,
                                  "rig_mode": True, "match_rate_hz": 2.0, "calibration_frames": 3,
                                  "rig_calibration_file": str(previous), "calibration_refine": False,
                                  "qos_reliability": "reliable", "diagnostics_period": 0.5},
                       namespace=ns, name="riguncertain")
    side = tmp_path / "rig.uncertain.yaml"
    with proc.session(ns) as tester:
        _request_calibration(tester, ns)
        t0 = tester.now_ns()
        for rnd in range(4):
            _publish(tester, 6, 2.0, tester.now_ns(), seed=rnd + 1)
            if side.exists():
                break
        tester.wait_for(side.exists, 60, "the uncertain calibration file")
        data = yaml.safe_load(side.read_text())
        assert data["certain"] is False and "refinement off" in data["uncertain_because"]
        assert previous.read_text() == before  # the file in use is untouched
        _publish(tester, 2, 2.0, tester.now_ns(), seed=7)  # a pair after the fit applies the decision
        d = _diag(tester, t0, "calibration", lambda v: v.startswith("uncertain"), timeout=30)
        assert d["calibration_file"] == str(previous) and d["calibrated"] == "True"
        tester.take("corr")
        _publish(tester, 3, 5.0, tester.now_ns(), seed=9)
        tester.wait_for(lambda: len(tester.peek("corr")) >= 3, 30, "correspondences after the refusal")
        corr = tester.take("corr")
        assert all(np.allclose(np.asarray(m.homography).reshape(3, 3), H_TRUE) for m in corr if m.calibrated)
        assert any(m.calibrated for m in corr)


def test_bad_calibration_file_fails_start_with_reason(tmp_path, tiny_checkpoint):
    ros_env()
    bad = tmp_path / "bad.yaml"
    bad.write_text("homography: [[1, 0], [0, 1]]\n")
    proc = NodeProcess(tmp_path, {"model": str(tiny_checkpoint), "backend": "onnxruntime",
                                  "rig_calibration_file": str(bad)}, namespace="/dm_badcal", name="badcal")
    proc.proc.wait(120)
    assert proc.stop() == 2
    assert "rig_calibration_file" in proc.log() and "3x3" in proc.log()
