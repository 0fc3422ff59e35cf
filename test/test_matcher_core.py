"""Matcher core: model shapes, input kinds, coordinate mapping, backends, bad input, checkpoints."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from distillmatch_ros.backends import BACKENDS
from distillmatch_ros.checkpoint import load_checkpoint, save_checkpoint
from distillmatch_ros.errors import BackendUnavailable, CheckpointError, InputError
from distillmatch_ros.matcher import Matcher, scale_points, to_tensor
from distillmatch_ros.model import build_model, with_input_size


def _textured(h, w, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1)).astype(np.uint8)
    import cv2
    return cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope="module")
def matcher(tiny_checkpoint):
    return Matcher(tiny_checkpoint, backend="torch", match_threshold=0.0)


def test_model_forward_static_shapes():
    m = build_model("tiny", input_size=[160, 128], pretrained_backbone=False, max_matches=64).eval()
    with torch.inference_mode():
        out = m(torch.rand(1, 1, 128, 160), torch.rand(1, 1, 128, 160))
    assert out["visible_points"].shape == (1, 64, 2)
    assert out["thermal_points"].shape == (1, 64, 2)
    assert out["scores"].shape == (1, 64) and out["valid"].dtype == torch.bool
    assert "conf" not in out  # inference never builds the confidence matrix
    assert out["modality_logits"].shape == (2, 2)
    k = torch.zeros(1, 8, dtype=torch.long)
    with torch.inference_mode():
        trained = m(torch.rand(1, 1, 128, 160), torch.rand(1, 1, 128, 160), coarse_pairs=(k, k))
    assert trained["conf"].shape == (1, 16 * 20, 16 * 20)  # what the coarse loss reads


def test_coarse_fast_path_equals_dual_softmax():
    """CoarseMatching.match (log domain, no confidence matrix) selects the matches and scores of
    select(confidence(...)), the definition the coarse loss trains."""
    from distillmatch_ros.model.coarse import CoarseMatching
    torch.manual_seed(0)
    cm = CoarseMatching(32, 2, 4, 0.1).eval()
    base = torch.randn(2, 300, 32)
    fv, ft = base * 1.5, base[:, torch.randperm(300)] * 1.5 + 0.7 * torch.randn(2, 300, 32)
    ref = cm.select(cm.confidence(fv, ft), 0.05, 128)
    got = cm.match(fv, ft, 0.05, 128)
    assert int(ref[3].sum()) > 50  # the case is not empty
    assert torch.equal(ref[3], got[3])
    # same set of (visible, thermal) cells; near-equal scores may swap places in the top-K
    for b in range(2):
        pairs_ref = {(int(i), int(j)) for i, j, ok in zip(ref[0][b], ref[1][b], ref[3][b], strict=True) if ok}
        pairs_got = {(int(i), int(j)) for i, j, ok in zip(got[0][b], got[1][b], got[3][b], strict=True) if ok}
        assert pairs_ref == pairs_got
    torch.testing.assert_close(got[2], ref[2], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("gh, gw", [(12, 15), (13, 9)])
def test_coarse_band_is_the_dual_softmax_over_the_band(gh, gw):
    """CoarseMatching.match_in_band selects what select() gives on a confidence matrix whose
    similarity is -inf outside the band (each cell competes only for cells within ``band``
    cells of its own position), and equals the whole-image match when the band covers the grid.
    Both grids take the blocked similarity (_band_similarity), one of them with a last block
    of fewer grid rows than BAND_BLOCK_ROWS."""
    from distillmatch_ros.model.coarse import CoarseMatching, band_cells
    torch.manual_seed(1)
    assert CoarseMatching(32, 0, 4, 0.1, band=2)._band_indices((gh, gw), "cpu")[4] is not None
    base = torch.randn(2, gh * gw, 32)
    fv, ft = base * 1.5, base * 1.5 + 0.9 * torch.randn(2, gh * gw, 32)
    idx, ok = band_cells((gh, gw), 2)
    near = torch.zeros(gh * gw, gh * gw, dtype=torch.bool)
    near[torch.arange(gh * gw).unsqueeze(1).expand_as(idx)[ok], idx[ok]] = True
    assert int(near.sum(1).min()) == 9 and int(near.sum(1).max()) == 25  # corners, inner cells
    whole = CoarseMatching(32, 0, 4, 0.1)
    sim = (fv @ ft.transpose(1, 2)) / (32 * 0.1)
    masked = sim.masked_fill(~near, float("-inf"))
    ref = whole.select(torch.softmax(masked, 1) * torch.softmax(masked, 2), 0.05, gh * gw)
    got = CoarseMatching(32, 0, 4, 0.1, band=2).match(fv, ft, 0.05, gh * gw, (gh, gw))
    assert int(ref[3].sum()) > 40 and torch.equal(ref[3], got[3])
    for b in range(2):
        assert {(int(i), int(j)) for i, j, v in zip(ref[0][b], ref[1][b], ref[3][b], strict=True) if v} == \
            {(int(i), int(j)) for i, j, v in zip(got[0][b], got[1][b], got[3][b], strict=True) if v}
        for i, j, v in zip(got[0][b], got[1][b], got[3][b], strict=True):
            assert not v or (abs(int(i) // gw - int(j) // gw) <= 2 and abs(int(i) % gw - int(j) % gw) <= 2)
    torch.testing.assert_close(got[2], ref[2], rtol=1e-4, atol=1e-6)
    wide = CoarseMatching(32, 0, 4, 0.1, band=max(gh, gw)).match(fv, ft, 0.05, gh * gw, (gh, gw))
    free = whole.match(fv, ft, 0.05, gh * gw)
    assert torch.equal(wide[3], free[3])
    assert {(int(i), int(j)) for i, j, v in zip(wide[0][0], wide[1][0], wide[3][0], strict=True) if v} == \
        {(int(i), int(j)) for i, j, v in zip(free[0][0], free[1][0], free[3][0], strict=True) if v}
    torch.testing.assert_close(wide[2], free[2], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="grid"):
        CoarseMatching(32, 0, 4, 0.1, band=2).match(fv, ft, 0.05, 64)


def test_guided_passes_run_the_banded_graph(tiny_checkpoint):
    """A pass guided by a verified full-size fit (match_guided) runs a second full-size graph
    whose coarse level matches in the band (guided_band); guided_band 0 runs it on the unguided
    graph."""
    m = Matcher(tiny_checkpoint, backend="torch")
    guided = m._graph("guided")
    assert guided is not m._backend and guided.model.config["coarse_band"] == m.options["guided_band"] == 5
    assert m._backend.model.config["coarse_band"] == 0 and guided.model.match_threshold == 0.0
    assert m._graph("guided") is guided  # built once
    calls = []
    m._graphs["guided-band5"] = lambda v, t: calls.append("band") or guided(v, t)
    rng = np.random.default_rng(3)
    img = cv2.GaussianBlur(rng.integers(0, 256, (240, 320), dtype=np.uint8), (0, 0), 2)
    m.match_guided(img, img, np.eye(3))
    assert calls == ["band"]
    m.set_options(guided_band=0)
    assert m._graph("guided") is m._backend


def test_coarse_layers_batch_both_images_exactly():
    """The batched transform is the per-image one (self layers within, cross layers across)."""
    from distillmatch_ros.model.coarse import CoarseMatching
    torch.manual_seed(1)
    cm = CoarseMatching(32, 4, 4, 0.1).eval()
    fv, ft = torch.randn(2, 50, 32), torch.randn(2, 50, 32)
    with torch.inference_mode():
        got_v, got_t = cm.transform(fv, ft)
        v, t = fv, ft
        for i, layer in enumerate(cm.layers):
            v, t = (layer(v, v), layer(t, t)) if i % 2 == 0 else (layer(v, t), layer(t, v))
    torch.testing.assert_close(got_v, v, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_t, t, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("vis_kind", ["gray", "bgr"])
@pytest.mark.parametrize("th_kind", ["u8", "u16", "f32"])
def test_match_input_kinds(matcher, vis_kind, th_kind):
    vis = _textured(300, 451, 1)
    if vis_kind == "bgr":
        vis = np.dstack([vis, vis // 2, 255 - vis])
    th8 = _textured(240, 320, 2)
    th = {"u8": th8, "u16": th8.astype(np.uint16) * 40 + 20000,
          "f32": th8.astype(np.float32) / 10 + 273.0}[th_kind]
    r = matcher.match(vis, th)
    n = len(r)
    assert r.visible_points.shape == (n, 2) and r.visible_points.dtype == np.float32
    assert r.thermal_points.shape == (n, 2) and r.thermal_points.dtype == np.float32
    assert r.scores.shape == (n,) and r.inliers.shape == (n,) and r.inliers.dtype == bool
    assert r.homography is None or (r.homography.shape == (3, 3) and r.homography.dtype == np.float64)
    # Coordinates are in each input image's own pixels.
    assert (r.visible_points[:, 0] < 451 + 2).all() and (r.visible_points[:, 1] < 300 + 2).all()
    assert (r.thermal_points[:, 0] < 320 + 2).all() and (r.thermal_points[:, 1] < 240 + 2).all()
    assert (r.visible_points > -2).all() and (r.thermal_points > -2).all()


def test_scale_points_maps_pixel_centres():
    # Working pixel centre x maps to the original pixel centre covering the same spot.
    pts = np.array([[0.0, 0.0], [159.0, 127.0], [79.5, 63.5]], np.float32)
    out = scale_points(pts, (160, 128), (256, 320))  # original 320x256: exact 2x
    np.testing.assert_allclose(out, [[0.5, 0.5], [318.5, 254.5], [159.5, 127.5]])


class _OracleBackend:
    """Returns the true correspondences of a known homography at the working resolution."""
    name = "oracle"

    def __init__(self, H_work):
        self.H = H_work

    def __call__(self, vis, th):
        ys, xs = np.mgrid[8:120:8, 8:150:8]
        pt = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
        ph = np.c_[pt, np.ones(len(pt))] @ self.H.T
        pv = ph[:, :2] / ph[:, 2:]
        k = len(pt)
        return pv.astype(np.float32), pt.astype(np.float32), np.full(k, 0.9, np.float32), np.ones(k, np.uint8)


def test_coordinates_map_back_with_known_homography(matcher):
    """Matcher-independent check of the mapping code: an oracle network that is exact at the
    working size must give the true homography in the original images' pixels."""
    vis_wh, th_wh, work = (640, 480), (320, 256), (160, 128)
    H_true = np.array([[1.9, 0.1, 20.0], [-0.05, 1.8, 10.0], [1e-5, 2e-5, 1.0]])

    def to_work(wh):  # original pixel -> working pixel (centres at integers)
        sx, sy = work[0] / wh[0], work[1] / wh[1]
        return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])

    H_work = to_work(vis_wh) @ H_true @ np.linalg.inv(to_work(th_wh))
    saved = matcher._backend
    matcher._backend = _OracleBackend(H_work)
    matcher.set_options(guided_pass=False)  # the one pass whose mapping this checks (guided: below)
    try:
        # textured inputs (the oracle ignores them; constant frames are refused before the network)
        rng = np.random.default_rng(0)
        r = matcher.match(rng.integers(0, 256, (480, 640), dtype=np.uint8),
                          rng.integers(0, 256, (256, 320), dtype=np.uint8))
    finally:
        matcher._backend = saved
        matcher.set_options(guided_pass=True)
    ph = np.c_[r.thermal_points, np.ones(len(r))] @ H_true.T
    np.testing.assert_allclose(ph[:, :2] / ph[:, 2:], r.visible_points, atol=1e-3)
    Hn = r.homography / r.homography[2, 2]
    np.testing.assert_allclose(Hn, H_true, rtol=1e-3, atol=1e-3)
    assert r.inliers.all()


@pytest.mark.parametrize("checkpoint, graph", [("tiny_checkpoint", "whole"), ("cross_checkpoint", "whole"),
                                               ("tiny_checkpoint", "guided")])
def test_onnxruntime_matches_torch(checkpoint, graph, request):
    """The exported graph gives the same matches: the whole-image one (both fine stages) and the
    guided passes' banded one (its blocked similarity, CoarseMatching._band_similarity), on a
    grid of 17 rows: its last block of rows is short, which an export once got wrong."""
    pytest.importorskip("onnxruntime")
    path = request.getfixturevalue(checkpoint)  # both fine stages export as static graphs
    if graph == "whole":
        a = Matcher(path, backend="torch", match_threshold=0.0)
        b = Matcher(path, backend="onnxruntime", match_threshold=0.0)
    else:
        model, card = load_checkpoint(path)
        model = with_input_size(model, (160, 136))
        a = Matcher.from_model(model, backend="torch", card=card, match_threshold=0.0)
        b = Matcher.from_model(model, backend="onnxruntime", card=card, match_threshold=0.0)
    vis, th = _textured(256, 320, 3), _textured(256, 320, 4)
    ta, tt = to_tensor(vis, a.input_size), to_tensor(th, a.input_size)
    ga, gb = (a._backend, b._backend) if graph == "whole" else (a._graph(graph), b._graph(graph))
    if graph == "guided":  # a band the blocked similarity serves, the last block 1 row of 4
        assert ga.model.config["coarse_band"] > 0 and ga.model.coarse._band_indices((17, 20), "cpu")[4] is not None
    pa, qa, sa, va = ga(ta, tt)
    pb, qb, sb, vb = gb(ta, tt)
    key_a = {(round(float(x), 1), round(float(y), 1)): i for i, (x, y) in enumerate(pa) if va[i]}
    same, close = 0, 0
    for i, (x, y) in enumerate(pb):
        j = key_a.get((round(float(x), 1), round(float(y), 1)))
        if vb[i] and j is not None:
            same += 1
            close += np.abs(qb[i] - qa[j]).max() <= 0.05 and np.abs(pb[i] - pa[j]).max() <= 0.05
    n = int(va.sum())
    assert n > 0
    assert same >= 0.99 * n and close >= 0.99 * n


def test_onnx_export_is_static(tiny_checkpoint):
    onnx = pytest.importorskip("onnx")
    m = Matcher(tiny_checkpoint, backend="onnxruntime")
    g = onnx.load(str(m._backend.onnx_path)).graph
    for v in list(g.input) + list(g.output):
        dims = v.type.tensor_type.shape.dim
        assert all(d.HasField("dim_value") and d.dim_value > 0 for d in dims), v.name
    assert [d.dim_value for d in g.output[0].type.tensor_type.shape.dim] == [256, 2]
    assert [d.dim_value for d in g.input[0].type.tensor_type.shape.dim] == [1, 1, 128, 160]


@pytest.mark.parametrize("vis,th,msg", [
    (np.zeros((0, 0), np.uint8), np.zeros((64, 64), np.uint8), "too small"),
    (np.zeros((64, 64), np.uint8), np.zeros((64, 64, 3), np.uint8), "single-channel"),
    (np.zeros((64, 64), np.uint8), np.full((64, 64), np.nan, np.float32), "NaN"),
    (np.zeros((64, 64), np.float64), np.zeros((64, 64), np.uint8), "uint8"),
    (np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.int32), "dtype"),
    ([[1, 2]], np.zeros((64, 64), np.uint8), "numpy array"),
])
def test_bad_inputs_raise_clear_errors(matcher, vis, th, msg):
    with pytest.raises(InputError, match=msg):
        matcher.match(vis, th)


def test_checkpoint_roundtrip_and_errors(tmp_path, tiny_checkpoint):
    model, card = load_checkpoint(tiny_checkpoint)
    assert card["name"] == "tiny_random" and model.config["input_size"] == [160, 128]
    with pytest.raises(CheckpointError, match="not found"):
        Matcher(tmp_path / "missing.pt")
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        Matcher(bad)
    trunc = tmp_path / "truncated.pt"
    trunc.write_bytes(tiny_checkpoint.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated"):
        Matcher(trunc)
    other = tmp_path / "other_format.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not a DistillMatch checkpoint"):
        Matcher(other)
    mism = tmp_path / "mismatch.pt"
    small = build_model("tiny", input_size=[160, 128], pretrained_backbone=False, dims=[16, 32, 64])
    save_checkpoint(mism, small)
    obj = torch.load(mism, weights_only=True)
    obj["config"]["dims"] = [32, 64, 128]  # config no longer describes the weights
    torch.save(obj, mism)
    with pytest.raises(CheckpointError, match="do not match the architecture"):
        Matcher(mism)


def test_backend_selection_errors(tiny_checkpoint):
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable, match="CUDA"):
            Matcher(tiny_checkpoint, backend="tensorrt")
        with pytest.raises(BackendUnavailable, match="CUDA"):
            Matcher(tiny_checkpoint, backend="torch", device="cuda")
    with pytest.raises(BackendUnavailable, match="unknown backend"):
        Matcher(tiny_checkpoint, backend="openvino_int4")
    with pytest.raises(BackendUnavailable, match="CPU"):
        Matcher(tiny_checkpoint, backend="openvino", device="cuda")
    assert Matcher(tiny_checkpoint, backend="auto").backend in BACKENDS


def test_device_is_checked_before_the_model_loads(tmp_path, tiny_checkpoint):
    from distillmatch_ros import node_params
    from distillmatch_ros.backends import check_device

    for bad in ("banana", "cuda:x", "meta", "CPU"):
        with pytest.raises(BackendUnavailable, match="device must be cpu, cuda or cuda:N"):
            Matcher(tmp_path / "missing.pt", backend="auto", device=bad)  # the device, not the missing file
    with pytest.raises(BackendUnavailable, match="cuda:99"):
        Matcher(tmp_path / "missing.pt", backend="onnxruntime", device="cuda:99")
    with pytest.raises(BackendUnavailable, match="CUDA only"):
        check_device("cpu", "tensorrt")
    assert "device must be" in node_params.SPECS["device"].problem("banana", strict=True)
    assert node_params.SPECS["device"].problem("", strict=True) is None
    m = Matcher(tiny_checkpoint, backend="auto", device="cpu")  # auto keeps to the device asked for
    assert m.backend != "tensorrt"
    assert m.backend != "torch" or m._backend.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="TensorRT needs a CUDA GPU; none here")
def test_tensorrt_matches_torch(tiny_checkpoint):
    pytest.importorskip("torch_tensorrt", reason="torch-tensorrt not installed (extra 'tensorrt')")
    a = Matcher(tiny_checkpoint, backend="torch", device="cuda", match_threshold=0.0)
    b = Matcher(tiny_checkpoint, backend="tensorrt", match_threshold=0.0)
    vis, th = _textured(256, 320, 3), _textured(256, 320, 4)
    ra, rb = a.match(vis, th), b.match(vis, th)
    assert abs(len(ra) - len(rb)) <= max(2, 0.05 * len(ra))


def test_runtime_threshold_filters(matcher):
    vis, th = _textured(128, 160, 5), _textured(128, 160, 6)
    matcher.set_options(match_threshold=0.0)
    n0 = len(matcher.match(vis, th))
    matcher.set_options(match_threshold=1.0)
    n1 = len(matcher.match(vis, th))
    matcher.set_options(match_threshold=0.0)
    assert n1 == 0 and n0 > 0
    with pytest.raises(ValueError):
        matcher.set_options(match_threshold=2.0)
    with pytest.raises(ValueError, match="unknown"):
        matcher.set_options(bogus=1)


def test_centred_fine_correlation_sharpens_smooth_windows():
    """model.fine_correlation='centred' removes the window's shared feature before the cosine:
    on a smooth feature map (neighbours nearly alike) the plain cosine barely varies across the
    window, the centred one peaks clearly, and both put the peak on the true cell."""
    import torch

    from distillmatch_ros.model.config import make_config
    from distillmatch_ros.model.fine import FineLevel
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    # 8 channels: a large constant plus slow ramps, like post-ReLU features of a flat region
    feat = torch.stack([5.0 + 0.05 * xx, 5.0 + 0.05 * yy, 5.0 - 0.05 * xx, 5.0 - 0.05 * yy] * 2)[None]
    pts = torch.tensor([[[20.0, 24.0], [36.0, 28.0]]])  # pixels of a 64x64 image (feature stride 2)
    spreads = {}
    for centred in (False, True):
        level = FineLevel(8, 3, 2, centred)
        with torch.no_grad():
            level.proj.weight.copy_(torch.eye(8))
            level.proj.bias.zero_()
            logits, expected, _ = level(feat, feat, pts, pts, (64, 64))
        assert (logits.argmax(-1) == 4).all()
        spreads[centred] = float((logits.max(-1).values - logits.min(-1).values).mean())
    assert spreads[True] > 20 * spreads[False]
    with pytest.raises(ValueError, match="fine_correlation"):
        make_config("tiny", fine_correlation="dot")


def test_guided_shift_is_measured_in_working_pixels():
    from distillmatch_ros.matcher import guided_shift_px
    prior = np.array([[2.0, 0.0, 10.0], [0.0, 2.0, 5.0], [0, 0, 1.0]])  # visible at twice the thermal scale
    assert guided_shift_px(prior, prior, (512, 640), (416, 320)) == pytest.approx(0.0, abs=1e-9)
    moved = prior @ np.array([[1.0, 0.0, 3.0], [0.0, 1.0, -1.0], [0, 0, 1.0]])  # 3 thermal px right, 1 up
    assert guided_shift_px(prior, moved, (512, 640), (416, 320)) == pytest.approx(3.0 * 416 / 640)
    assert guided_shift_px(prior, np.full((3, 3), np.nan), (512, 640), (416, 320)) == float("inf")


def test_guided_passes_run_until_the_fit_converges(tiny_checkpoint, monkeypatch):
    """Each guided pass is guided by the last verified fit; the loop stops at the first fit that
    moves its prior by less than guided_converged_px, at guided_passes, or at a rejected fit."""
    from distillmatch_ros.result import MatchResult
    m = Matcher(tiny_checkpoint, backend="onnxruntime")
    shifts = []  # x offset (thermal px) each guided call adds to its prior

    def fit(H, verified=True):
        r = MatchResult(np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32), np.zeros(0, np.float32))
        r.homography = H if verified else None
        return r

    def fake_once(vis, th, backend, size, opt=None, t0=None):
        return fit(np.eye(3))  # the rough (or unguided) pass: verified identity
    priors, bands = [], []

    def fake_guided(vis, th, prior, band):
        priors.append(prior.copy())
        bands.append(band)
        dx = shifts.pop(0)
        if dx is None:
            return fit(None, verified=False)
        return fit(prior @ np.array([[1.0, 0, dx], [0, 1.0, 0], [0, 0, 1.0]]))
    monkeypatch.setattr(m, "_match_once", fake_once)
    monkeypatch.setattr(m, "_guided", fake_guided)
    img = np.zeros((256, 320), np.uint8)
    scale = m.input_size[0] / 320  # working px per thermal px

    m.set_options(guided_passes=3)
    shifts[:] = [20.0, 1.0, 9.0]  # converges at the second pass (1 thermal px < 4 working px)
    r = m.match(img, img)
    assert r.evidence["passes"] == 3 and r.homography[0, 2] == pytest.approx(21.0)
    assert [p[0, 2] for p in priors] == [0.0, 20.0]  # the second pass is guided by the first fit
    assert bands == [False, False]  # match's own passes search the whole image
    assert shifts == [9.0]

    priors.clear()
    shifts[:] = [20.0, 10.0, 8.0, 7.0]
    m.set_options(guided_passes=2)  # stops at the cap
    assert m.match(img, img).homography[0, 2] == pytest.approx(30.0) and shifts == [8.0, 7.0]

    shifts[:] = [20.0, None]  # the second fit is rejected: the first verified one stands
    assert m.match(img, img).homography[0, 2] == pytest.approx(20.0)

    shifts[:] = [4.0 / scale * 1.5, 1.0]
    m.set_options(guided_converged_px=8.0)  # a larger tolerance stops after one pass
    r = m.match(img, img)
    assert r.evidence["passes"] == 2 and shifts == [1.0]


def test_fine_readout_ablation_switches_off_the_named_parts(tiny_checkpoint):
    """benchmarks.fine_readout_ablation: ``no_fine2`` passes the 1/4 position on unchanged,
    ``no_subpixel`` returns the 1/2 window's position, and the shipped variant does neither."""
    from benchmarks.fine_readout_ablation import ablated
    from distillmatch_ros.model.distillmatch import inside
    torch.manual_seed(0)
    vis, th = torch.rand(1, 1, 128, 160), torch.rand(1, 1, 128, 160)
    outs = {}
    for variant in ("shipped", "no_fine2", "no_subpixel"):
        with torch.inference_mode():
            outs[variant] = ablated(str(tiny_checkpoint), variant)(vis, th)
    assert torch.equal(outs["no_fine2"]["fine2_thermal"], outs["no_fine2"]["fine4_thermal"])
    assert not torch.equal(outs["shipped"]["fine2_thermal"], outs["shipped"]["fine4_thermal"])
    assert torch.equal(outs["no_subpixel"]["thermal_points"], inside(outs["no_subpixel"]["fine2_thermal"], (160, 128)))
    assert not torch.allclose(outs["shipped"]["thermal_points"], outs["shipped"]["fine2_thermal"])
    with pytest.raises(SystemExit, match="unknown variant"):
        ablated(str(tiny_checkpoint), "no_coarse")
