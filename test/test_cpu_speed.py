"""The CPU fast paths: the matmul form of linear attention, the ONNX Runtime variants (saved
optimised graph, INT8 trunk), OpenVINO (FP32, NNCF INT8) and what ``backend="auto"`` picks on a
CPU."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distillmatch_ros import cpu_choice
from distillmatch_ros.model.attention import feature_map, head_mask, linear_attention


def _per_head_reference(q, k, v, heads, eps=1e-6):
    """Linear attention head by head, as LoFTR writes it (einsums over [B,L,H,D])."""
    b, n, c = q.shape
    s, d = k.shape[1], c // heads
    q = F.elu(q.view(b, n, heads, d)) + 1
    k = F.elu(k.view(b, s, heads, d)) + 1
    v = v.view(b, s, heads, d)
    kv = torch.einsum("bshd,bshv->bhdv", k, v)
    z = 1.0 / (torch.einsum("blhd,bhd->blh", q, k.sum(dim=1)) + eps)
    return torch.einsum("blhd,bhdv,blh->blhv", q, kv, z).reshape(b, n, c)


def test_linear_attention_equals_per_head_form():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 70, 64) * 3, torch.randn(2, 50, 64) * 3, torch.randn(2, 50, 64)
    out = linear_attention(q, k, v, head_mask(64, 4))
    assert torch.allclose(out, _per_head_reference(q, k, v, 4), atol=1e-5, rtol=1e-5)


def test_heads_do_not_mix():
    torch.manual_seed(1)
    q, k, v = torch.randn(1, 30, 32), torch.randn(1, 20, 32), torch.randn(1, 20, 32)
    v2 = v.clone()
    v2[..., 8:] += 5.0  # change every head but the first
    a, b = linear_attention(q, k, v, head_mask(32, 4)), linear_attention(q, k, v2, head_mask(32, 4))
    assert torch.equal(a[..., :8], b[..., :8]) and not torch.allclose(a[..., 8:], b[..., 8:])


def test_feature_map_is_elu_plus_one():
    x = torch.linspace(-20, 20, 1001)
    assert torch.allclose(feature_map(x), F.elu(x) + 1, atol=1e-6)


def test_decide_keeps_accuracy_then_speed():
    ref = {"prec3": 0.40, "ms": 100.0}
    measured = {"onnxruntime": ref, "openvino": {"prec3": 0.385, "ms": 50.0},  # 0.015 worse
                "onnxruntime_int8": {"prec3": 0.395, "ms": 80.0}}
    name, reason = cpu_choice.decide(measured)
    assert name == "onnxruntime_int8" and "openvino loses accuracy" in reason
    measured["onnxruntime_int8"]["ms"] = 101.0  # not faster
    assert cpu_choice.decide(measured)[0] == "onnxruntime"


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLMATCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_saved_optimised_graph_is_reused(tiny_checkpoint, cache):
    pytest.importorskip("onnxruntime")
    from distillmatch_ros.backends import GRAPH_VERSION
    from distillmatch_ros.matcher import Matcher
    a = Matcher(tiny_checkpoint, backend="onnxruntime")
    assert f"-g{GRAPH_VERSION}." in a._backend.onnx_path.name  # a changed graph is a new file
    saved = sorted(cache.glob("*.opt.onnx"))
    assert len(saved) == 3  # the full-size graph, the rough pass's and the banded guided one (built with the matcher)
    mtimes = [p.stat().st_mtime_ns for p in saved]
    b = Matcher(tiny_checkpoint, backend="onnxruntime")
    assert sorted(cache.glob("*.opt.onnx")) == saved and [p.stat().st_mtime_ns for p in saved] == mtimes
    x = np.random.default_rng(0).random((1, 1, 128, 160), np.float32)
    for ra, rb in zip(a._backend(x, x[..., ::-1].copy()), b._backend(x, x[..., ::-1].copy()), strict=True):
        np.testing.assert_allclose(ra, rb, atol=1e-4)


def _calibration_folder(root, n=4):
    from benchmarks.common import textured
    for sub in ("visible", "thermal"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(root / "visible" / f"{i}.png"), textured(240, 320, i))
        cv2.imwrite(str(root / "thermal" / f"{i}.png"), textured(240, 320, i + 50))
    return root


def test_int8_quantises_the_trunk_convolutions_only(tiny_checkpoint, cache, tmp_path, monkeypatch):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime.quantization")
    from distillmatch_ros.matcher import Matcher
    monkeypatch.setenv("DISTILLMATCH_CALIBRATION_DIR", str(_calibration_folder(tmp_path / "calib")))
    m = Matcher(tiny_checkpoint, backend="onnxruntime_int8")
    assert m.backend == "onnxruntime_int8" and ".int8-env-calib." in m._backend.onnx_path.name
    graph = onnx.load(str(m._backend.onnx_path)).graph
    quantised = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    q_convs = [n.name for n in convs if n.input[0] in quantised]
    assert q_convs and all(n.startswith(("/model/texture/", "/model/semantic/")) for n in q_convs)
    assert not [n for n in graph.node if n.op_type == "MatMul" and n.input[0] in quantised]
    from benchmarks.common import textured
    r = m.match(textured(240, 320, 7), textured(240, 320, 8))
    assert r.visible_points.shape == (len(r), 2)


def _fake_quantize_consumers(xml_path):
    """(node name, op type) of every node an OpenVINO FakeQuantize feeds."""
    import openvino as ov
    model = ov.Core().read_model(str(xml_path))
    return [(t.get_node().get_friendly_name(), t.get_node().get_type_name())
            for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"
            for t in op.output(0).get_target_inputs()]


def test_openvino_int8_quantises_the_coarse_attention(tiny_checkpoint, cache, tmp_path, monkeypatch,
                                                              capsys):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from benchmarks.common import textured
    from distillmatch_ros.backends import make_backend
    from distillmatch_ros.matcher import Matcher
    monkeypatch.setenv("DISTILLMATCH_CALIBRATION_DIR", str(_calibration_folder(tmp_path / "calib")))
    m = Matcher(tiny_checkpoint, backend="openvino_int8")
    assert m.backend == "openvino_int8" and ".int8-env-calib-nncf" in m._backend.model_path.name
    assert m._graph("rough").model_path != m._backend.model_path  # the rough pass has its own, at its size
    consumers = _fake_quantize_consumers(m._backend.model_path)
    assert len([n for n, t in consumers if t == "MatMul" and n.startswith("/model/layers.")]) >= 8
    # The encoder, the fine stage and the graph's top level (similarity, dual softmax, selection)
    # stay FP32: no exported node outside the attention layers reads a quantised tensor.
    assert not [n for n, _ in consumers if n.startswith("/model/") and not n.startswith("/model/layers.")]
    built = capsys.readouterr().out
    assert built.count("building the OpenVINO INT8 model once") == 3  # unguided, rough and guided graphs
    mtime = m._backend.model_path.stat().st_mtime_ns
    again = make_backend("openvino_int8", m.model, None, m.input_size, prepare=m.prepare)  # from the cache
    assert "building" not in capsys.readouterr().out and again.model_path.stat().st_mtime_ns == mtime
    r = m.match(textured(240, 320, 7), textured(240, 320, 8))
    assert r.visible_points.shape == (len(r), 2)


def test_openvino_int8_without_nncf_says_so(tiny_checkpoint, cache, monkeypatch):
    pytest.importorskip("openvino")
    import sys

    from distillmatch_ros.errors import BackendUnavailable
    from distillmatch_ros.matcher import Matcher
    monkeypatch.setitem(sys.modules, "nncf", None)  # as if not installed
    with pytest.raises(BackendUnavailable, match="needs NNCF"):
        Matcher(tiny_checkpoint, backend="openvino_int8")


def test_sample_calibration_without_training_sets(monkeypatch):
    """A fresh clone (no ../shared) calibrates on the demo's sample pairs, as many as asked: the
    views of one photo zoom in down to a floor instead of past the frame (12 views a photo)."""
    from distillmatch_ros import quantize
    from distillmatch_ros.bag import sample
    monkeypatch.delenv("DISTILLMATCH_CALIBRATION_DIR", raising=False)
    monkeypatch.setattr(quantize, "training_folders", lambda: ([], ""))
    monkeypatch.setattr(sample, "pseudo_infrared_fn",
                        lambda source=None: (lambda v: cv2.cvtColor(v, cv2.COLOR_BGR2GRAY), "gray stand-in"))
    pairs, source = quantize.calibration_pairs(48)
    assert source == "sample" == quantize.calibration_source()
    assert len(pairs) >= 48
    assert all(v.shape[:2] == t.shape == (sample.VISIBLE_SIZE[1], sample.VISIBLE_SIZE[0]) for v, t in pairs)
    assert len({v.tobytes() for v, _ in pairs}) == len(pairs)  # every view differs


def _check_pair():
    from benchmarks.common import textured
    H = np.array([[1.0, 0.02, 4.0], [-0.02, 1.0, 3.0], [0, 0, 1.0]])
    vis = textured(240, 320, 3)
    return vis, cv2.warpPerspective(vis, np.linalg.inv(H), (320, 240)), H


def test_auto_measures_once_then_follows_the_record(tiny_checkpoint, cache, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    from distillmatch_ros.matcher import Matcher
    monkeypatch.setattr(cpu_choice, "applies", lambda device: True)
    monkeypatch.setattr(cpu_choice, "check_pairs", lambda: [_check_pair()] * 2)
    m = Matcher(tiny_checkpoint, backend="auto")  # nothing recorded: measures the quick candidates now
    assert "measuring" in capsys.readouterr().out and "measured now" in m.backend_choice
    record = json.loads(cpu_choice.record_path(m).read_text())
    assert set(record["measured"]) == set(cpu_choice.quick_candidates()) and record["choice"] == m.backend
    for row in record["measured"].values():
        assert 0.0 <= row["prec3"] <= 1.0 and row["ms"] > 0
    r = m.match(*_check_pair()[:2])  # the matcher is left on the chosen backend, ready
    assert r.visible_points.shape == (len(r), 2)

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again despite the record")
    monkeypatch.setattr(cpu_choice, "measure", no_measuring)
    again = Matcher(tiny_checkpoint, backend="auto")
    assert again.backend == record["choice"] and f"measured {record['date']}" in again.backend_choice


def test_prepare_measures_int8_too(tiny_checkpoint, cache, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime.quantization")
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from distillmatch_ros.matcher import Matcher
    monkeypatch.setattr(cpu_choice, "applies", lambda device: True)
    monkeypatch.setenv("DISTILLMATCH_CALIBRATION_DIR", str(_calibration_folder(tmp_path / "calib")))
    m = Matcher(tiny_checkpoint, backend="onnxruntime")
    monkeypatch.setattr(cpu_choice, "measure", lambda matcher, backends, pairs: {
        n: {"prec3": 0.5, "auc10": 0.5, "ms": 10.0 if n == "onnxruntime_int8" else 20.0} for n in backends})
    record = cpu_choice.prepare(m, pairs=[_check_pair(), _check_pair()], int8=False)  # as a first start does
    assert record["choice"] == "onnxruntime" and not cpu_choice.fully_measured(m)
    record = cpu_choice.prepare(m, pairs=[_check_pair()])
    assert set(record["measured"]) == {"onnxruntime", "openvino", "onnxruntime_int8", "openvino_int8"}
    assert record["choice"] == "onnxruntime_int8" and cpu_choice.fully_measured(m)
    assert m._backend.name == "onnxruntime_int8"
    again = Matcher(tiny_checkpoint, backend="auto")
    assert again.backend == "onnxruntime_int8" and "onnxruntime_int8 10" in again.backend_choice

    # setup_env.sh's second run: `cpu_prepare --if-missing` finds it all measured and measures nothing.
    from distillmatch_ros import cpu_prepare

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again")
    monkeypatch.setattr(cpu_choice, "prepare", no_measuring)
    from distillmatch_ros.backends import model_hash
    from distillmatch_ros.model import with_config
    banded = model_hash(with_config(again.model, coarse_band=again.options["guided_band"]))
    for p in cache.glob(f"*{banded}*"):  # match_guided's graph, as on a machine set up before it existed
        p.unlink()
    assert cpu_prepare.main(["--model", str(tiny_checkpoint), "--if-missing"]) == 0
    assert [p for p in cache.glob(f"*{banded}*.int8*")]  # built by the set-up, not at a first start


def test_openvino_runs_the_same_network(tiny_checkpoint, cache):
    """OpenVINO (its export flavour) gives ONNX Runtime's matches, in any order."""
    pytest.importorskip("openvino")
    from distillmatch_ros.backends import make_backend
    from distillmatch_ros.matcher import Matcher
    m = Matcher(tiny_checkpoint, backend="onnxruntime", match_threshold=0.0)
    vis, th, _ = _check_pair()
    v, t = m.prepare(vis, th)[2:]
    ref = m._backend(v, t)
    out = make_backend("openvino", m.model, None, m.input_size)(v, t)
    assert [o.dtype for o in out] == [o.dtype for o in ref] and [o.shape for o in out] == [o.shape for o in ref]

    def matches(o):
        n = int(o[3].sum())
        rows = np.round(np.concatenate([o[0][:n], o[1][:n]], 1), 2)
        return rows[np.lexsort(rows.T[::-1])]
    assert int(ref[3].sum()) > 20
    np.testing.assert_allclose(matches(out), matches(ref), atol=0.02)


def test_argmax_by_compare_is_the_first_argmax():
    """The OpenVINO export's argmax (CoarseMatching._row_max) gives torch's max and first index,
    ties included."""
    from distillmatch_ros.model.coarse import CoarseMatching
    c = CoarseMatching(32, 2, 4, 0.1)
    x = torch.randn(2, 50, 70)
    x[0, 3, [5, 9]] = 10.0  # a tie: the first position wins
    x[1, 7] = -1.0  # a constant row
    ref = x.max(dim=2)
    c.argmax_by_compare = True
    val, idx = c._row_max(x)
    assert torch.equal(val, ref.values) and torch.equal(idx, ref.indices)
    assert idx[0, 3] == 5 and idx[1, 7] == 0


def test_a_candidate_that_cannot_start_is_recorded_not_fatal(tiny_checkpoint, cache, monkeypatch):
    from distillmatch_ros.errors import BackendUnavailable
    from distillmatch_ros.matcher import Matcher
    real = cpu_choice.make_backend

    def flaky(name, *args, **kwargs):
        if name != cpu_choice.REFERENCE:
            raise BackendUnavailable(f"{name}: no plugin for this CPU")
        return real(name, *args, **kwargs)
    monkeypatch.setattr(cpu_choice, "applies", lambda device: True)
    monkeypatch.setattr(cpu_choice, "quick_candidates", lambda: ["onnxruntime", "openvino"])
    monkeypatch.setattr(cpu_choice, "make_backend", flaky)
    monkeypatch.setattr(cpu_choice, "check_pairs", lambda: [_check_pair()])
    m = Matcher(tiny_checkpoint, backend="auto")
    record = json.loads(cpu_choice.record_path(m).read_text())
    assert m.backend == "onnxruntime" and record["unavailable"] == {"openvino": "openvino: no plugin for this CPU"}
    assert "openvino unavailable" in m.backend_choice


def test_an_unreadable_record_is_measured_again(tiny_checkpoint, cache, monkeypatch, capsys):
    from distillmatch_ros.matcher import Matcher
    monkeypatch.setattr(cpu_choice, "applies", lambda device: True)
    monkeypatch.setattr(cpu_choice, "check_pairs", lambda: [_check_pair()])
    m = Matcher(tiny_checkpoint, backend="auto")
    path = cpu_choice.record_path(m)
    path.write_text('{"choice": "openvino", "rea')  # a write cut short
    capsys.readouterr()
    again = Matcher(tiny_checkpoint, backend="auto")
    assert "the record is unreadable (JSONDecodeError" in capsys.readouterr().out
    assert "measured now" in again.backend_choice and json.loads(path.read_text())["choice"] == again.backend
    assert not list(cache.glob("*.tmp"))


def test_network_memo_is_kept_per_backend(tiny_checkpoint, cache, tmp_path):
    """The benchmarks' network cache (benchmarks.common.memoize_network) never serves one
    backend's outputs to another: an INT8 graph's differ from the FP32 one's."""
    from benchmarks.common import memoize_network
    from distillmatch_ros.matcher import Matcher

    class Fixed:
        def __init__(self, name, value):
            self.name, self.value = name, value

        def __call__(self, vis, th):
            return (np.full((4, 2), self.value, np.float32),) * 2 + (np.ones(4, np.float32), np.ones(4, np.uint8))
    x = np.random.default_rng(0).random((1, 1, 32, 40), np.float32)
    outs = {}
    for name, value in (("fp32", 1.0), ("int8", 2.0), ("fp32", 3.0)):
        m = Matcher(tiny_checkpoint, backend="torch")
        m._backend = Fixed(name, value)
        memoize_network(m, tmp_path / "memo")
        outs.setdefault(name, []).append(float(m._backend(x, x)[0][0, 0]))
    assert outs == {"fp32": [1.0, 1.0], "int8": [2.0]}  # the second fp32 call is served from the memo
