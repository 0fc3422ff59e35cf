"""matcher_node on image_transport's compressed topics, as robots publish cameras.

One node process with both cameras on ``compressed`` (JPEG visible, 16-bit PNG thermal). The
visible base topic is remapped, so the test also shows that the compressed topic follows the
remap as image_transport's does. The same process runs with the deprecated ``qos_reliability``
and ``qos_depth`` parameters: they must still work (into the standard qos_overrides defaults)
and say they are deprecated.
"""
from __future__ import annotations

import array
import time

import pytest

from distillmatch_ros.testing.node_harness import (
    NodeProcess,
    Tester,
    requires_node,
    ros_env,
    textured_pair,
    vary,
)

pytestmark = requires_node()

NS = "/dm_cmp"
VIS_BASE = "/cam/front/image_raw"          # the visible camera's base topic after remapping
VIS_TOPIC = VIS_BASE + "/compressed"
TH_TOPIC = f"{NS}/thermal/image_raw/compressed"


@pytest.fixture(scope="module")
def node(tmp_path_factory, tiny_checkpoint):
    ros_env()
    proc = NodeProcess(tmp_path_factory.mktemp("node_cmp"), {
        "model": str(tiny_checkpoint), "backend": "onnxruntime", "num_threads": 1, "rig_mode": False,
        "match_threshold": 0.0, "visible_transport": "compressed", "thermal_transport": "compressed",
        "qos_reliability": "reliable", "qos_depth": 7, "diagnostics_period": 0.5, "slop": 0.02,
    }, namespace=NS, remaps={"visible/image_raw": VIS_BASE}, name="node_cmp")
    yield from proc.serve()


@pytest.fixture(scope="module")
def tester(node):
    t = Tester(NS, compressed_topics=(VIS_TOPIC, TH_TOPIC))
    t.wait_connected()
    yield t
    t.close()


def _stamped(msg, stamp_ns):
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return msg


def test_compressed_pairs_in_correspondences_out(node, tester):
    assert f"subscribing to {VIS_TOPIC} (compressed) and {TH_TOPIC} (compressed)" in node.log()
    vis, th, _ = textured_pair(0)
    msg = tester.image(th, "mono16", 0, "t")
    assert msg.format == "mono16; png compressed mono16" and bytes(msg.data[:4]) == b"\x89PNG"
    assert tester.image(vis, "bgr8", 0, "v").format == "bgr8; jpeg compressed bgr8"
    tester.take("corr")
    base = tester.now_ns()
    stamps = []
    for k in range(4):
        stamps.append(tester.publish_pair(vis, vary(th, k), base + k * 200_000_000))
        time.sleep(0.3)
    tester.wait_for(lambda: len(tester.peek("corr")) >= 4, 60, "4 correspondences from compressed input")
    got = tester.take("corr")
    assert [c.header.stamp.sec * 10**9 + c.header.stamp.nanosec for c in got] == stamps
    for c in got:  # sizes come from the decoded images: 16-bit PNG thermal decoded at full size
        assert (c.visible_width, c.visible_height, c.thermal_width, c.thermal_height) == (320, 256, 160, 128)
        assert c.matched and len(c.scores) > 0
    tester.wait_for(lambda: tester.peek("fused"), 30, "fused image")


def test_bad_compressed_payloads_are_diagnostics_and_the_node_lives_on(node, tester):
    vis, th, _ = textured_pair(5)
    good_vis = tester.image(vis, "bgr8", 0, "v")
    corrupt = tester.image(vis, "bgr8", 0, "v")
    corrupt.data = array.array("B", bytes(corrupt.data[:200]) + b"\x00" * 50)  # truncated JPEG
    depth = tester.image(th, "mono16", 0, "t")
    depth.format = "16UC1; compressedDepth png"
    cases = [(tester.pub_vis, corrupt, tester.image(vary(th, 50), "mono16", 0, "t"),
              "visible image rejected: cannot decode jpeg image"),
             (tester.pub_th, depth, None, "compressedDepth images are not supported")]
    for pub, bad, partner, text in cases:
        time.sleep(1.1)  # log lines are throttled to one per second
        t0 = tester.now_ns()
        stamp = t0 + 50_000_000
        pub.publish(_stamped(bad, stamp))
        if partner is not None:  # a corrupt payload is found in the worker, so it needs a pair
            tester.pub_th.publish(_stamped(partner, stamp))
        tester.wait_for(lambda text=text: text in node.log(), 30, f"log line: {text}")
        tester.wait_for(lambda text=text, t0=t0: any(text in d.get("input.message", "")
                                                     for d in tester.diag_history(t0)),
                        10, f"diagnostics: {text}")
        assert node.alive()
    hist = tester.diag_history(0)
    assert int(hist[-1]["visible_rejected"]) >= 1 and int(hist[-1]["thermal_rejected"]) >= 1
    tester.take("corr")
    stamp = tester.now_ns() + 100_000_000
    tester.pub_vis.publish(_stamped(good_vis, stamp))
    tester.pub_th.publish(_stamped(tester.image(vary(th, 51), "mono16", 0, "t"), stamp))
    tester.wait_for(lambda: any(c.matched for c in tester.peek("corr")), 30, "recovery after bad payloads")


def test_deprecated_qos_parameters_still_apply_through_qos_overrides(node, tester):
    from rcl_interfaces.srv import GetParameters

    log = node.log()
    assert "parameter qos_reliability is deprecated" in log and "parameter qos_depth is deprecated" in log
    get = tester.node.create_client(GetParameters, f"{NS}/matcher_node/get_parameters")
    assert get.wait_for_service(timeout_sec=10)
    names = [f"qos_overrides.{VIS_TOPIC}.subscription.reliability", f"qos_overrides.{TH_TOPIC}.subscription.depth"]
    fut = get.call_async(GetParameters.Request(names=names))
    tester.wait_for(fut.done, 30, "get_parameters")
    assert [v.string_value or v.integer_value for v in fut.result().values] == ["reliable", 7]
