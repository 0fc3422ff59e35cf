"""The Correspondences message: fields from a pipeline result, and decoding from a bag with rosbags."""
from pathlib import Path

import numpy as np
import pytest

from distillmatch_ros import correspondences as corr
from distillmatch_ros.pipeline import ALIGNMENT_STATES as PIPELINE_ALIGNMENT
from distillmatch_ros.pipeline import THERMAL_STATES as PIPELINE_THERMAL
from distillmatch_ros.pipeline import PairOutput
from distillmatch_ros.result import MatchResult

ROOT = Path(__file__).resolve().parents[1]


def _output():
    rng = np.random.default_rng(0)
    n = 37
    r = MatchResult(rng.random((n, 2)).astype(np.float32) * 300, rng.random((n, 2)).astype(np.float32) * 100,
                    rng.random(n).astype(np.float32), np.array([[2, 0.1, 5], [0, 2, 3], [0, 0, 1.0]]),
                    rng.random(n) > 0.3)
    return PairOutput(stamp_ns=1_700_000_000_123_456_789, result=r, matched=True, homography=r.homography,
                      num_inliers=r.num_inliers, alignment="aligned", thermal_state="frozen",
                      visible_size=(640, 512), thermal_size=(320, 256), latency_ms=12.5, backend="onnxruntime")


MSG_FILE = ROOT / "interfaces/distillmatch_msgs/msg/Correspondences.msg"


def _msg_file():
    """(constants {name: value}, fields {name: type}) as written in Correspondences.msg."""
    constants, fields = {}, {}
    for line in MSG_FILE.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        ftype, rest = line.split(None, 1)
        if "=" in rest:
            name, value = (x.strip() for x in rest.split("=", 1))
            constants[name] = int(value)
        else:
            fields[rest.strip()] = ftype
    return constants, fields


def test_state_codes_are_the_msg_constants():
    constants, _ = _msg_file()
    from_msg = {(k.split("_", 1)[0], k.split("_", 1)[1].lower()): v for k, v in constants.items()}
    ours = {**{("ALIGNMENT", s): c for s, c in corr.ALIGNMENT_CODES.items()},
            **{("THERMAL", s): c for s, c in corr.THERMAL_CODES.items()}}
    assert ours == from_msg
    msg = type("M", (), {"alignment_state": 2, "thermal_state": 7})
    assert corr._state(PIPELINE_ALIGNMENT, msg.alignment_state) == "drift_suspected"
    assert corr._state(PIPELINE_THERMAL, msg.thermal_state) == "unknown"


def test_fields_written_are_the_msg_fields():
    _, fields = _msg_file()
    written = set(corr.correspondence_fields(_output()))
    assert written == set(fields) - {"header", "thermal_stamp", "thermal_frame_id"}


def test_built_interface_is_the_msg_file():
    """The interface package in this environment was built from the same .msg (no stale build)."""
    msgmod = pytest.importorskip("distillmatch_msgs.msg", reason="run scripts/build_interfaces.sh")
    constants, fields = _msg_file()
    built = msgmod.Correspondences.get_fields_and_field_types()
    assert list(built) == list(fields)
    for name, value in constants.items():
        assert getattr(msgmod.Correspondences, name) == value, name


def test_rclpy_message_to_bag_and_back_with_rosbags(tmp_path, monkeypatch):
    monkeypatch.setenv("ROS_PYTHON_CHECK_FIELDS", "1")
    msgmod = pytest.importorskip("distillmatch_msgs.msg", reason="run scripts/build_interfaces.sh")
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import Reader, Writer
    from rosbags.typesys import Stores, get_typestore

    out = _output()
    msg = msgmod.Correspondences()
    for k, v in corr.correspondence_fields(out).items():
        setattr(msg, k, v)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(out.stamp_ns, 10**9)
    msg.header.frame_id = "visible_optical"

    store = corr.register_rosbags(get_typestore(Stores.ROS2_KILTED))
    bag = tmp_path / "bag"
    with Writer(bag, version=8) as w:
        conn = w.add_connection("/correspondences", corr.MSG_TYPE, typestore=store)
        w.write(conn, out.stamp_ns, serialize_message(msg))
    fresh = corr.register_rosbags(get_typestore(Stores.ROS2_KILTED))  # a reader knows only the .msg text
    with Reader(bag) as r:
        (conn, t, raw), = list(r.messages())
        got = corr.decode(fresh.deserialize_cdr(raw, conn.msgtype))
    want = corr.decode(msg)
    assert got["stamp_ns"] == want["stamp_ns"] == out.stamp_ns
    for key in ("visible_points", "thermal_points", "scores", "inliers", "homography"):
        np.testing.assert_array_equal(got[key], want[key])
    np.testing.assert_array_equal(got["visible_points"], out.result.visible_points)
    np.testing.assert_array_equal(got["inliers"], out.result.inliers)
    assert got["homography"] is not None and np.allclose(got["homography"], out.homography)
    assert (got["alignment"], got["thermal_state"], got["visible_size"]) == ("aligned", "frozen", (640, 512))
    assert got["num_inliers"] == out.result.num_inliers and got["backend"] == "onnxruntime"


def test_rosbags_message_from_fields():
    from rosbags.typesys import Stores, get_typestore
    store = corr.register_rosbags(get_typestore(Stores.ROS2_KILTED))
    Cls = store.types[corr.MSG_TYPE]
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    out = _output()
    out.homography = None
    fields = corr.correspondence_fields(out, numpy_arrays=True)
    m = Cls(header=Header(stamp=Time(sec=1, nanosec=2), frame_id="v"), thermal_stamp=Time(sec=1, nanosec=3),
            thermal_frame_id="t", **fields)
    raw = store.serialize_cdr(m, corr.MSG_TYPE)
    back = corr.decode(store.deserialize_cdr(raw, corr.MSG_TYPE))
    assert back["homography"] is None and back["matched"] and len(back["scores"]) == 37
