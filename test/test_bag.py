"""make-bag, bag-eval (both storages, rig mode, errors), the output bag, the demo.

Bag I/O tests use an oracle matcher (true matches + noise) so they run in milliseconds; the
tests about matching use the real Matcher on a tiny random-weight checkpoint (same code path),
and the accuracy comparison uses the shipped model when models/ has it.
"""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from distillmatch_ros import cli, evaluation
from distillmatch_ros.bag.io import BagError, BagReader, BagWriter, list_bag_files
from distillmatch_ros.bag.make_bag import THERMAL_TOPIC, VISIBLE_TOPIC, Pair, make_bag, render_pair
from distillmatch_ros.bag.replay import bag_eval, load_gt_homography
from distillmatch_ros.pipeline import PipelineConfig
from distillmatch_ros.result import MatchResult
from distillmatch_ros.testing.fakes import write_pairs_folder

REPO = Path(__file__).resolve().parents[1]
VIS_SIZE, TH_SIZE = (256, 192), (160, 128)


class Oracle:
    """Returns true correspondences of the rig (plus noise): bag I/O tests need no network."""

    backend = "oracle"

    def __init__(self, H, n=120, noise=0.3):
        self.H, self.n, self.noise = np.asarray(H, float), n, noise
        self.rng = np.random.default_rng(0)
        self.calls = 0

    def match(self, visible, thermal):
        self.calls += 1
        h, w = thermal.shape[:2]
        kt = self.rng.uniform(0, [w - 1, h - 1], (self.n, 2))
        kv = cv2.perspectiveTransform(kt[:, None], self.H)[:, 0] + self.rng.normal(0, self.noise, (self.n, 2))
        H, mask = cv2.findHomography(kt, kv, cv2.USAC_MAGSAC, 3.0)
        return MatchResult(kv.astype(np.float32), kt.astype(np.float32), np.ones(self.n, np.float32), H,
                           mask.ravel().astype(bool))


def _textured(rng, shape):
    img = cv2.resize(rng.integers(0, 255, (shape[0] // 8, shape[1] // 8) + shape[2:], dtype=np.uint8),
                     (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return img


@pytest.fixture(scope="module")
def pairs():
    rng = np.random.default_rng(1)
    out = []
    for k in range(4):
        v = _textured(rng, (VIS_SIZE[1], VIS_SIZE[0], 3))
        t = 255 - cv2.cvtColor(v, cv2.COLOR_BGR2GRAY)  # aligned, contrast-inverted "thermal"
        out.append(Pair(v, t, np.eye(3), f"p{k}"))
    return out


def _bag(tmp_path, pairs, storage="sqlite3", **kw):
    path = str(tmp_path / f"rec_{storage}")
    kw.setdefault("thermal_size", TH_SIZE)
    info = make_bag(path, pairs, storage=storage, **kw)
    return path, info


def test_make_bag_rates_encodings_and_rig_warp(tmp_path, pairs):
    path, info = _bag(tmp_path, pairs, "mcap", thermal_encoding="mono16", visible_encoding="rgb8",
                      visible_rate=30, thermal_rate=9)
    H = np.array(info["rig_homography"])
    assert info["frames"]["thermal"] == 4 and 11 <= info["frames"]["visible"] <= 13
    with BagReader(path) as r:
        assert r.storage == "mcap"
        assert r.topics()[THERMAL_TOPIC] == ("sensor_msgs/msg/Image", 4)
        msgs = list(r.messages([VISIBLE_TOPIC, THERMAL_TOPIC]))
    th = [(t, m) for topic, t, m in msgs if topic == THERMAL_TOPIC]
    vis = [(t, m) for topic, t, m in msgs if topic == VISIBLE_TOPIC]
    assert [m.encoding for _, m in th] == ["mono16"] * 4 and vis[0][1].encoding == "rgb8"
    periods = np.diff([t for t, _ in th]) * 1e-9
    assert np.allclose(periods, 1 / 9, atol=1e-6)
    assert np.allclose(np.diff([t for t, _ in vis]) * 1e-9, 1 / 30, atol=1e-6)
    # The thermal frame is the rig's view: counts decode back to the rendered 8-bit image.
    from distillmatch_ros.image_codec import thermal_to_numpy

    counts = thermal_to_numpy(th[1][1])
    assert counts.shape == (TH_SIZE[1], TH_SIZE[0]) and counts.dtype == np.uint16
    _, expect = render_pair(pairs[1], VIS_SIZE, TH_SIZE, H)
    assert np.array_equal((counts - 7000) // 30, expect)
    # and that view really is the ground truth: a thermal pixel lands on the matching visible one
    p = np.array([[80.0, 64.0]])
    u, v = cv2.perspectiveTransform(p[:, None], H)[0, 0]
    gray_vis = 255 - cv2.cvtColor(pairs[1].visible, cv2.COLOR_BGR2GRAY).astype(int)
    assert abs(int(expect[64, 80]) - gray_vis[int(round(v)), int(round(u))]) < 25


@pytest.mark.parametrize("compressed", [False, True])
def test_pairs_folder_keeps_16_bit_thermal(tmp_path, compressed):
    """Radiometric counts in 16-bit PNGs reach the bag unchanged (raw Image, and 16-bit PNG)."""
    from distillmatch_ros.image_codec import compressed_to_numpy, image_to_numpy

    rng = np.random.default_rng(2)
    source = []
    for sub in ("visible", "thermal"):
        (tmp_path / "pairs" / sub).mkdir(parents=True)
    for k in range(3):
        cv2.imwrite(str(tmp_path / "pairs" / "visible" / f"p{k}.png"), rng.integers(0, 255, (96, 128, 3), np.uint8))
        source.append(rng.integers(20000, 40000, (96, 128), np.uint16))  # far beyond 8 bits
        cv2.imwrite(str(tmp_path / "pairs" / "thermal" / f"p{k}.png"), source[-1])
    (tmp_path / "eye.json").write_text(json.dumps(np.eye(3).tolist()))  # the rig leaves pixels in place
    bag = str(tmp_path / "rec")
    assert cli.main(["make-bag", bag, "--pairs-dir", str(tmp_path / "pairs"), "--rig-homography",
                     str(tmp_path / "eye.json"), "--thermal-encoding", "mono16"]
                    + (["--compressed"] if compressed else [])) == 0
    decode = compressed_to_numpy if compressed else image_to_numpy
    with BagReader(bag) as r:
        recorded = [decode(m) for _, _, m in r.messages([THERMAL_TOPIC + ("/compressed" if compressed else "")])]
    assert len(recorded) == 3
    for got, want in zip(recorded, source, strict=True):
        assert got.dtype == np.uint16 and np.array_equal(got, want)


def test_make_bag_api_checks_its_settings(tmp_path, pairs):
    from distillmatch_ros.bag.make_bag import pairs_from_folder, pairs_from_npz

    folder = write_pairs_folder(tmp_path / "pairs", pairs[:3])
    assert [p.name for p in pairs_from_folder(folder, limit=2)] == ["p0", "p1"]
    assert len(pairs_from_folder(folder)) == 3
    with pytest.raises(BagError, match=r"limit must be in \[1, "):
        pairs_from_folder(folder, limit=-1)
    for kw, msg in (({"visible_size": (0, 0)}, r"visible_size must be in \[8, "),
                    ({"thermal_size": (64, 99999)}, "thermal_size must be in"),
                    ({"compressed": True, "jpeg_quality": 500}, r"jpeg_quality must be in \[1, 100\]"),
                    ({"visible_rate": 0.0}, "visible_rate must be in")):
        with pytest.raises(BagError, match=msg):
            make_bag(str(tmp_path / "bag"), pairs, **kw)
        assert not (tmp_path / "bag").exists()
    th = np.random.default_rng(0).integers(0, 65535, (96, 128), np.uint16)
    np.savez(tmp_path / "a.npz", visible=pairs[0].visible, thermal=th, H=np.eye(3))
    np.savez(tmp_path / "b.npz", visible=pairs[0].visible, thermal=th, H=np.eye(3))
    got = pairs_from_npz([str(tmp_path / "b.npz"), str(tmp_path / "a.npz")], limit=1)
    assert [p.name for p in got] == ["a.npz"] and np.array_equal(got[0].thermal, th)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bag_eval_both_storages(tmp_path, pairs, storage):
    path, info = _bag(tmp_path, pairs, storage, thermal_encoding="16UC1")
    H = np.array(info["rig_homography"])
    report = tmp_path / "report"
    s = bag_eval(path, Oracle(H), VISIBLE_TOPIC, THERMAL_TOPIC, str(report), gt_homography=H,
                 config=PipelineConfig(rig_mode=False), progress=False)
    assert s["pairs_evaluated"] == 4 and s["pairs_dropped"] == 0
    assert s["info"]["storage"] == storage
    assert s["matches_mean"] == 120 and s["inliers_mean"] > 100
    assert s["latency_ms"]["p50"] > 0 and s["latency_ms"]["p95"] >= s["latency_ms"]["p50"]
    assert len(s["homography_error_px"]) == 4 and max(s["homography_error_px"]) < 1.0
    assert s["auc"]["3"] > 0.8 and s["auc"]["10"] > 0.9
    on_disk = json.loads((report / "report.json").read_text())
    assert on_disk["auc"] == s["auc"] and on_disk["pairs_evaluated"] == 4
    for name in ("report.md", "matches_inliers.png", "latency_hist.png", "homography_stability.png",
                 "fused_examples.jpg"):
        assert (report / name).stat().st_size > 0, name
    assert "AUC@3/5/10" in (report / "report.md").read_text()


def test_rig_mode_holds_the_homography_between_matches(tmp_path, pairs):
    many = [pairs[k % 4] for k in range(9)]  # one second at 9 Hz
    path, info = _bag(tmp_path, many)
    H = np.array(info["rig_homography"])
    oracle = Oracle(H)
    s = bag_eval(path, oracle, VISIBLE_TOPIC, THERMAL_TOPIC, str(tmp_path / "r"), gt_homography=H,
                 config=PipelineConfig(rig_mode=True, match_rate_hz=3.0, fuse=False), progress=False, plots=False)
    assert s["pairs_evaluated"] == 9
    assert oracle.calls == s["pairs_matched"] and 2 <= oracle.calls <= 4
    assert s["homography_error_px"].count(None) == 9 - oracle.calls  # protocol error only where matched
    assert all(e is not None and e < 1.0 for e in s["published_error_px"])  # held H fused every pair
    assert s["published_auc"]["3"] > 0.8


def test_dropped_pairs_are_counted(tmp_path, pairs):
    # Equal rates; thermal stamps trail the visible ones by 0.3 of a period (33.3 ms).
    path, info = _bag(tmp_path, pairs, visible_rate=9.0, thermal_rate=9.0)
    oracle = Oracle(np.array(info["rig_homography"]))
    args = (path, oracle, VISIBLE_TOPIC, THERMAL_TOPIC, str(tmp_path / "r"))
    kw = dict(config=PipelineConfig(fuse=False), progress=False, plots=False)
    s = bag_eval(*args, slop=0.03, **kw)  # too tight for that offset: every pair is lost
    assert s["pairs_evaluated"] == 0 and s["pairs_dropped"] == 4
    assert s["info"]["sync"]["thermal"]["dropped_by_reason"]["unmatched"] >= 3
    s = bag_eval(*args, slop=0.04, **kw)
    assert s["pairs_evaluated"] == 4 and s["pairs_dropped"] == 0


def test_corrupt_bag_gives_clear_error(tmp_path, pairs):
    for storage in ("sqlite3", "mcap"):
        path, _ = _bag(tmp_path, pairs[:2], storage)
        f = Path(list_bag_files(path)[0])
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 3])
        with pytest.raises(BagError, match="corrupt|cannot open"):
            bag_eval(path, Oracle(np.eye(3)), VISIBLE_TOPIC, THERMAL_TOPIC, str(tmp_path / "r"), progress=False)
    with pytest.raises(BagError, match="not found"):
        bag_eval(str(tmp_path / "nope"), Oracle(np.eye(3)), VISIBLE_TOPIC, THERMAL_TOPIC, str(tmp_path / "r"))


def test_missing_topic_lists_what_the_bag_has(tmp_path, pairs):
    path, _ = _bag(tmp_path, pairs[:2])
    with pytest.raises(BagError, match=r"'/ir/image' is not in bag .*/camera/thermal/image_raw"):
        bag_eval(path, Oracle(np.eye(3)), VISIBLE_TOPIC, "/ir/image", str(tmp_path / "r"), progress=False)


def test_unknown_encoding_is_reported_before_matching(tmp_path):
    path = str(tmp_path / "yuv")
    with BagWriter(path, "sqlite3") as w:
        Image = w.msg_class("sensor_msgs/msg/Image")
        for k, (topic, enc) in enumerate([(VISIBLE_TOPIC, "bgr8"), (THERMAL_TOPIC, "yuv422")]):
            data = np.zeros(32 * 32 * (3 if enc == "bgr8" else 2), np.uint8)
            w.write(topic, "sensor_msgs/msg/Image", 10 + k, Image(header=w.header(10 + k), height=32, width=32,
                    encoding=enc, is_bigendian=0, step=32 * (3 if enc == "bgr8" else 2), data=data))
    oracle = Oracle(np.eye(3))
    with pytest.raises(BagError, match=r"unknown thermal image encoding 'yuv422'.*mono16"):
        bag_eval(path, oracle, VISIBLE_TOPIC, THERMAL_TOPIC, str(tmp_path / "r"), progress=False)
    assert oracle.calls == 0


@pytest.mark.parametrize("content, msg", [
    ("[[1, 0, 0], [0, 1, 0]]", "3x3"), ("[1, 0, 0, 0, 1, 0, 0, 0, 1]", "3x3"),
    ("{\"H\": 1}", "3x3"), ("[[1, 0, 0], [0, 1, 0], [0, 0, \"x\"]]", "3x3"),
    ("not json", "not JSON"), ("[[0, 0, 0], [0, 0, 0], [0, 0, 0]]", "invertible")])
def test_wrong_gt_file_is_rejected(tmp_path, content, msg):
    p = tmp_path / "gt.json"
    p.write_text(content)
    with pytest.raises(BagError, match=msg):
        load_gt_homography(str(p))


def test_cli_reports_bad_gt_in_one_line(tmp_path, pairs, capsys):
    path, _ = _bag(tmp_path, pairs[:2])
    (tmp_path / "gt.json").write_text("[[1, 2], [3, 4]]")
    rc = cli.main(["bag-eval", path, "--gt-homography", str(tmp_path / "gt.json"), "--report", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "3x3" in err and "Traceback" not in err


def test_out_bag_round_trip(tmp_path, pairs):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    path, info = _bag(tmp_path, pairs, "mcap")
    H = np.array(info["rig_homography"])
    out_bag = str(tmp_path / "out")
    s = bag_eval(path, Oracle(H), VISIBLE_TOPIC, THERMAL_TOPIC, str(tmp_path / "r"), out_bag=out_bag,
                 out_storage="mcap", config=PipelineConfig(rig_mode=False), progress=False, plots=False)
    # A plain rosbags reader, with only the stock types, decodes both topics (types come from the bag).
    with AnyReader([Path(out_bag)], default_typestore=get_typestore(Stores.ROS2_KILTED)) as r:
        topics = {c.topic: c.msgtype for c in r.connections}
        assert topics == {"/distillmatch/correspondences": "distillmatch_msgs/msg/Correspondences",
                          "/distillmatch/fused/image": "sensor_msgs/msg/Image"}
        got = [(c.topic, t, r.deserialize(raw, c.msgtype)) for c, t, raw in r.messages()]
    corr = [m for topic, _, m in got if topic == "/distillmatch/correspondences"]
    fused = [m for topic, _, m in got if topic == "/distillmatch/fused/image"]
    assert len(corr) == len(fused) == s["pairs_evaluated"] == 4
    for m, row in zip(corr, s["pairs"], strict=True):
        assert m.header.stamp.sec * 10**9 + m.header.stamp.nanosec == row["stamp_ns"]
        assert m.matched and len(m.scores) == row["matches"] and int(np.sum(m.inliers)) == row["inliers"]
        assert np.allclose(np.reshape(m.homography, (3, 3)), row["homography"])
        pts = np.reshape(m.thermal_points, (-1, 2))
        vis = cv2.perspectiveTransform(pts[:, None].astype(float), H)[:, 0]
        assert np.median(np.linalg.norm(vis - np.reshape(m.visible_points, (-1, 2)), axis=1)) < 2
    assert fused[0].encoding == "bgr8" and (fused[0].width, fused[0].height) == VIS_SIZE
    with pytest.raises(BagError, match="already exists"):
        bag_eval(path, Oracle(H), VISIBLE_TOPIC, THERMAL_TOPIC, str(tmp_path / "r"), out_bag=out_bag, progress=False)


# --- the real matcher ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_matcher(tmp_path_factory):
    """The lead's Matcher on a random-weight tiny checkpoint (small input, every match kept)."""
    torch = pytest.importorskip("torch")
    from distillmatch_ros.checkpoint import save_checkpoint
    from distillmatch_ros.matcher import Matcher
    from distillmatch_ros.model import build_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, build_model("tiny", input_size=[160, 128], pretrained_backbone=False), {"name": "tiny-test"})
    return Matcher(path, backend="torch", match_threshold=0.0)


def _rendered(pairs, H):
    return [render_pair(p, VIS_SIZE, TH_SIZE, H) for p in pairs]


def test_bag_eval_runs_the_same_matcher_path(tmp_path, pairs, tiny_matcher):
    """Per pair, bag-eval's matches and errors equal the Matcher API's on the same images."""
    path, info = _bag(tmp_path, pairs[:3], thermal_encoding="mono8")
    H = np.array(info["rig_homography"])
    s = bag_eval(path, tiny_matcher, VISIBLE_TOPIC, THERMAL_TOPIC, str(tmp_path / "r"), gt_homography=H,
                 config=PipelineConfig(rig_mode=False, fuse=False), progress=False, plots=False)
    direct = []
    for v, t in _rendered(pairs[:3], H):
        r = tiny_matcher.match(v, t)
        direct.append((len(r), evaluation.evaluate_pair({"thermal": t, "H": H}, r.visible_points, r.thermal_points)))
    k = s["pairs_evaluated"]
    assert k >= 2 and k + s["pairs_dropped"] == 3
    assert [row["matches"] for row in s["pairs"]] == [n for n, _ in direct[:k]]
    assert all(n > 0 for n, _ in direct)
    for mine, (_, ref) in zip(s["homography_error_px"], direct[:k], strict=True):
        assert (mine is None and not np.isfinite(ref["err"])) or mine == pytest.approx(ref["err"], rel=1e-6)


def test_bag_auc_matches_matcher_api_with_shipped_model(tmp_path, pairs):
    from distillmatch_ros.errors import CheckpointError
    from distillmatch_ros.matcher import Matcher

    try:
        matcher = Matcher.from_pretrained()
    except CheckpointError as e:
        pytest.skip(f"no shipped default model in models/ ({e})")
    sample = pytest.importorskip("distillmatch_ros.bag.sample")
    real_pairs, _ = sample.sample_pairs((640, 480), 2, pseudo_ir=sample.simple_pseudo_thermal)
    path = str(tmp_path / "rec")
    info = make_bag(path, real_pairs, thermal_size=(320, 256), thermal_encoding="mono16")
    H = np.array(info["rig_homography"])
    s = bag_eval(path, matcher, VISIBLE_TOPIC, THERMAL_TOPIC, str(tmp_path / "r"), gt_homography=H,
                 config=PipelineConfig(rig_mode=False, fuse=False, guide_with_held=False), progress=False,
                 plots=False)
    rows = []
    for p in real_pairs:
        v, t8 = render_pair(p, (640, 480), (320, 256), H)
        t16 = (7000 + t8.astype(np.uint16) * 30).astype(np.uint16)
        r = matcher.match(v, t16)
        rows.append(evaluation.evaluate_pair({"thermal": t16, "H": H}, r.visible_points, r.thermal_points))
    api = evaluation.summarize(rows)
    assert s["pairs_evaluated"] == len(real_pairs)
    for t in (3, 5, 10):
        assert abs(s["auc"][str(t)] - api[f"auc{t}"]) < 0.05


def test_demo_end_to_end(tmp_path, tiny_matcher, monkeypatch):
    from distillmatch_ros.bag import demo, sample

    monkeypatch.setattr(sample, "PHOTOS", sample.PHOTOS[:2])  # keep the test short: 2 photos x 1 view
    s = demo.run_demo(str(tmp_path / "d"), views=1, progress=False, matcher=tiny_matcher)
    d = tmp_path / "d"
    assert s["pairs_evaluated"] + s["pairs_dropped"] == 2 and s["pairs_evaluated"] >= 1
    assert set(s["auc"]) == {"3", "5", "10"}
    assert (d / "report" / "fused_examples.jpg").stat().st_size > 0
    assert json.loads((d / "report" / "report.json").read_text())["info"]["demo"]["thermal_source"]
    assert load_gt_homography(str(d / "gt_homography.json")).shape == (3, 3)
    with BagReader(str(d / "output_bag")) as r:
        assert r.topics()["/distillmatch/fused/image"][1] == s["pairs_evaluated"]


def test_cli_make_bag_then_bag_eval(tmp_path, pairs, tiny_matcher, capsys):
    write_pairs_folder(tmp_path / "pairs", pairs[:2])
    bag = str(tmp_path / "rec")
    assert cli.main(["make-bag", bag, "--pairs-dir", str(tmp_path / "pairs"), "--storage", "mcap",
                     "--thermal-encoding", "32FC1", "--thermal-size", "160x128"]) == 0
    gt = tmp_path / "rec.gt_homography.json"
    assert load_gt_homography(str(gt)).shape == (3, 3)
    rc = cli.main(["bag-eval", bag, "--gt-homography", str(gt), "--report", str(tmp_path / "r"),
                   "--model", str(tiny_matcher.model_path), "--backend", "torch", "--rig-mode", "off",
                   "--no-progress", "--out-bag", str(tmp_path / "out")])
    assert rc == 0, capsys.readouterr().err
    s = json.loads((tmp_path / "r" / "report.json").read_text())
    assert s["pairs_evaluated"] >= 1 and s["info"]["rig_mode"] is False and "auc" in s
    out = capsys.readouterr().out
    assert "AUC@3/5/10" in out and (tmp_path / "r" / "fused").is_dir() and "fused/" in out
    rc = cli.main(["bag-eval", bag, "--report", str(tmp_path / "r0"), "--examples", "0", "--model",
                   str(tiny_matcher.model_path), "--backend", "torch", "--rig-mode", "off", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and not (tmp_path / "r0" / "fused").exists() and "fused/" not in out
