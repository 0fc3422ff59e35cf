"""Bags recorded as robots record them (CompressedImage on <topic>/compressed: JPEG
visible, 16-bit PNG thermal), make-bag --compressed, and bag-eval's errors on things that are
not bags.

Bag I/O uses an oracle matcher (true matches + noise, as in test_bag.py); the accuracy check
(compressed vs raw within 0.1 AUC) uses the shipped model when models/ has it.
"""
import cv2
import numpy as np
import pytest

from distillmatch_ros import cli
from distillmatch_ros.bag.io import COMPRESSED_TYPE, BagError, BagReader, BagWriter
from distillmatch_ros.bag.make_bag import THERMAL_TOPIC, VISIBLE_TOPIC, Pair, make_bag
from distillmatch_ros.bag.replay import bag_eval
from distillmatch_ros.image_codec import thermal_to_numpy, visible_to_numpy
from distillmatch_ros.pipeline import PipelineConfig
from distillmatch_ros.result import MatchResult
from distillmatch_ros.testing.fakes import write_pairs_folder

VIS_SIZE, TH_SIZE = (256, 192), (160, 128)


class Oracle:
    """True correspondences of the rig plus noise; records the thermal images it was given."""

    backend = "oracle"

    def __init__(self, H, n=120):
        self.H, self.n, self.rng = np.asarray(H, float), n, np.random.default_rng(0)
        self.thermal_seen = []

    def match(self, visible, thermal):
        self.thermal_seen.append(thermal)
        h, w = thermal.shape[:2]
        kt = self.rng.uniform(0, [w - 1, h - 1], (self.n, 2))
        kv = cv2.perspectiveTransform(kt[:, None], self.H)[:, 0] + self.rng.normal(0, 0.3, (self.n, 2))
        H, mask = cv2.findHomography(kt, kv, cv2.USAC_MAGSAC, 3.0)
        return MatchResult(kv.astype(np.float32), kt.astype(np.float32), np.ones(self.n, np.float32), H,
                           mask.ravel().astype(bool))


@pytest.fixture(scope="module")
def pairs():
    rng = np.random.default_rng(7)
    out = []
    for k in range(5):
        small = rng.integers(0, 255, (VIS_SIZE[1] // 8, VIS_SIZE[0] // 8, 3), dtype=np.uint8)
        v = cv2.resize(small, VIS_SIZE, interpolation=cv2.INTER_CUBIC)
        out.append(Pair(v, 255 - cv2.cvtColor(v, cv2.COLOR_BGR2GRAY), np.eye(3), f"p{k}"))
    return out


def test_make_bag_compressed_records_as_image_transport(tmp_path, pairs):
    raw = str(tmp_path / "raw")
    make_bag(raw, pairs, thermal_size=TH_SIZE, thermal_encoding="mono16")
    info = make_bag(str(tmp_path / "cmp"), pairs, storage="mcap", thermal_size=TH_SIZE,
                    thermal_encoding="mono16", compressed=True)
    assert info["transport"] == "compressed"
    assert (info["visible_topic"], info["thermal_topic"]) == (VISIBLE_TOPIC + "/compressed",
                                                              THERMAL_TOPIC + "/compressed")
    with BagReader(str(tmp_path / "cmp")) as r:
        topics = r.topics()
        assert topics[THERMAL_TOPIC + "/compressed"] == (COMPRESSED_TYPE, 5)
        assert VISIBLE_TOPIC not in topics
        msgs = list(r.messages([info["visible_topic"], info["thermal_topic"]]))
    fmts = {topic: m.format for topic, _, m in msgs}
    assert fmts == {info["visible_topic"]: "bgr8; jpeg compressed bgr8",
                    info["thermal_topic"]: "mono16; png compressed mono16"}
    with BagReader(raw) as r:
        raw_th = [m for topic, _, m in r.messages([THERMAL_TOPIC]) if topic == THERMAL_TOPIC]
        raw_vis = [m for topic, _, m in r.messages([VISIBLE_TOPIC])]
    cmp_th = [m for topic, _, m in msgs if topic == info["thermal_topic"]]
    cmp_vis = [m for topic, _, m in msgs if topic == info["visible_topic"]]
    for a, b in zip(raw_th, cmp_th, strict=True):  # PNG: the 16-bit counts exactly
        counts = thermal_to_numpy(b)
        assert counts.dtype == np.uint16 and np.array_equal(counts, thermal_to_numpy(a))
        assert len(b.data) < a.step * a.height  # and it is compressed
    err = [np.abs(visible_to_numpy(b).astype(int) - visible_to_numpy(a)).mean()
           for a, b in zip(raw_vis, cmp_vis, strict=True)]
    assert max(err) < 4  # JPEG at quality 95
    with pytest.raises(BagError, match="32FC1 thermal images cannot go through the compressed"):
        make_bag(str(tmp_path / "f"), pairs, thermal_encoding="32FC1", compressed=True)


def test_bag_eval_detects_compressed_topics(tmp_path, pairs):
    info = make_bag(str(tmp_path / "cmp"), pairs, thermal_size=TH_SIZE, thermal_encoding="16UC1",
                    compressed=True)
    H = np.array(info["rig_homography"])
    oracle = Oracle(H)
    # the camera's base topic, as the node is configured: <topic>/compressed is found
    s = bag_eval(str(tmp_path / "cmp"), oracle, VISIBLE_TOPIC, THERMAL_TOPIC, str(tmp_path / "r"),
                 gt_homography=H, config=PipelineConfig(rig_mode=False), progress=False, plots=False)
    assert s["pairs_evaluated"] == 5 and s["pairs_dropped"] == 0
    assert s["info"]["visible_topic"] == VISIBLE_TOPIC + "/compressed"
    assert s["info"]["thermal_type"] == COMPRESSED_TYPE
    assert all(t.dtype == np.uint16 and t.shape == (TH_SIZE[1], TH_SIZE[0]) for t in oracle.thermal_seen)
    assert "(CompressedImage)" in (tmp_path / "r" / "report.md").read_text()


def test_cli_compressed_round_trip_and_one_line_errors(tmp_path, pairs, capsys):
    write_pairs_folder(tmp_path / "pairs", pairs[:3])
    bag = str(tmp_path / "rec")
    assert cli.main(["make-bag", bag, "--pairs-dir", str(tmp_path / "pairs"), "--compressed",
                     "--thermal-size", "160x128"]) == 0
    assert "compressed" in capsys.readouterr().out
    # bag-eval fails on its cheap checks before loading any model; these must be one line each
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "junk.mcap").write_bytes(b"not an mcap file")
    cases = [(str(tmp_path / "empty_dir"), [], "is not a ROS 2 bag"),
             (str(tmp_path / "junk.mcap"), [], "cannot open bag"),
             (bag, ["--visible-topic", "/nope"], "topic '/nope' is not in bag")]
    for path, extra, words in cases:
        rc = cli.main(["bag-eval", path, "--report", str(tmp_path / "r"), "--no-progress", *extra])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error: ") and words in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_compressed_depth_bag_is_refused_clearly(tmp_path):
    with BagWriter(str(tmp_path / "depth"), "sqlite3") as w:
        Msg = w.msg_class(COMPRESSED_TYPE)
        for k, topic in enumerate(("/v/image_raw/compressed", "/t/image_raw/compressed")):
            fmt = "bgr8; jpeg compressed bgr8" if k == 0 else "16UC1; compressedDepth png"
            w.write(topic, COMPRESSED_TYPE, 10**9, Msg(header=w.header(10**9), format=fmt,
                                                       data=np.zeros(20, np.uint8)))
    with pytest.raises(BagError, match="thermal camera on /t/image_raw/compressed: compressedDepth"):
        bag_eval(str(tmp_path / "depth"), Oracle(np.eye(3)), "/v/image_raw", "/t/image_raw",
                 str(tmp_path / "r"), progress=False, plots=False)


def test_compressed_auc_close_to_raw_with_shipped_model(tmp_path):
    """The acceptance check at test size: JPEG/PNG recording vs the same frames raw (shipped model)."""
    from distillmatch_ros.bag import sample
    from distillmatch_ros.errors import CheckpointError
    from distillmatch_ros.matcher import Matcher

    try:
        matcher = Matcher.from_pretrained(backend="onnxruntime")
    except CheckpointError as e:
        pytest.skip(f"no shipped default model ({e})")
    real, _ = sample.sample_pairs((640, 480), 1, pseudo_ir=sample.simple_pseudo_thermal)
    out = {}
    for transport in ("raw", "compressed"):
        path = str(tmp_path / transport)
        info = make_bag(path, real, thermal_size=(320, 256), thermal_encoding="mono16",
                        compressed=transport == "compressed")
        out[transport] = bag_eval(path, matcher, VISIBLE_TOPIC, THERMAL_TOPIC, str(tmp_path / f"r_{transport}"),
                                  gt_homography=np.array(info["rig_homography"]),
                                  config=PipelineConfig(rig_mode=False, fuse=False), progress=False, plots=False)
    assert out["raw"]["pairs_evaluated"] == out["compressed"]["pairs_evaluated"] == len(real)
    for t in ("3", "5", "10"):
        assert abs(out["raw"]["auc"][t] - out["compressed"]["auc"][t]) < 0.1, (t, out["raw"]["auc"],
                                                                               out["compressed"]["auc"])
