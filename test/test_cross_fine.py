"""The cross-modal fine stage: windows that see each other, trainable alone, old checkpoints intact."""
from __future__ import annotations

import pytest
import torch

from distillmatch_ros.checkpoint import save_checkpoint
from distillmatch_ros.model import build_model
from distillmatch_ros.model.config import complete_config, make_config


def _model(**kw):
    torch.manual_seed(0)
    kw.setdefault("fine_stage", "cross")
    return build_model("tiny", input_size=[96, 64], pretrained_backbone=False, max_matches=32, **kw).eval()


def test_fine_stage_is_chosen_by_config_and_old_configs_keep_theirs():
    assert make_config("tiny", fine_stage="cross")["fine_stage"] == "cross"
    old = {k: v for k, v in make_config("tiny", fine_stage="cross").items()
           if not k.startswith("cross_fine") and k != "fine_stage"}
    assert complete_config(old)["fine_stage"] == "window"
    assert _model().cross_fine is not None
    with pytest.raises(ValueError, match="fine_stage"):
        make_config("tiny", fine_stage="dense")
    window = _model(fine_stage="window")
    assert window.cross_fine is None and hasattr(window, "fine4")


def test_thermal_window_attends_to_the_visible_window():
    """The old stage correlated single-image features; here the thermal tokens that are
    correlated depend on the visible window's content, at both levels."""
    m = _model()
    g = torch.Generator().manual_seed(1)
    pv = torch.tensor([[[43.5, 27.5], [19.5, 11.5]]])
    pt0 = pv + 2.0
    for level, ch in ((m.cross_fine.level4, 32), (m.cross_fine.level2, 32)):
        fv, ft = torch.randn(1, ch, 16, 24, generator=g), torch.randn(1, ch, 16, 24, generator=g)
        with torch.no_grad():
            _, p1, _, tt1, _ = level(fv, ft, pv, pt0, (96, 64))
            _, p2, _, tt2, _ = level(fv + torch.randn(fv.shape, generator=g), ft, pv, pt0, (96, 64))
        assert (tt1 - tt2).abs().max() > 1e-3
        assert p1.shape == (1, 2, 2) and torch.isfinite(p1).all()


def test_fine_stage_learns_alone_with_the_trunk_frozen(training_data_root):
    """train_fine's step: the loss falls on a fixed batch and only cross_fine moves."""
    from training.augment import synth_batch
    from training.datasets import load_aligned_pairs, pairs_to_tensors
    from training.losses_match import fine_losses
    from training.train_fine import fine_mode, start_points
    m = _model()
    for name, p in m.named_parameters():
        p.requires_grad_(name.startswith("cross_fine."))
    trunk = {k: v.clone() for k, v in m.state_dict().items() if not k.startswith("cross_fine.")}
    fine_mode(m)
    vis, th = pairs_to_tensors(load_aligned_pairs(training_data_root / "pairs"), hw=(80, 104))
    batch = synth_batch(vis, th, out_hw=(64, 96), generator=torch.Generator().manual_seed(2))
    pv, pt0, mask = start_points(batch, 32, 2.5, torch.Generator().manual_seed(3))
    assert mask.float().mean() > 0.5
    opt = torch.optim.Adam(m.cross_fine.parameters(), lr=3e-3)
    first = last = None
    for _ in range(25):
        losses = fine_losses(m.forward_fine(batch["visible"], batch["thermal"], pv, pt0), batch["H_t2v"], mask, (5, 3))
        losses.pop("fine_err_px")
        total = sum(losses.values())
        first = total.item() if first is None else first
        last = total.item()
        opt.zero_grad()
        total.backward()
        opt.step()
    assert last < 0.8 * first
    for k, v in m.state_dict().items():
        if k in trunk:
            torch.testing.assert_close(v, trunk[k], msg=f"frozen tensor {k} changed")


def test_train_fine_runs_and_resumes(tmp_path, training_data_root):
    from training import train_fine
    init = tmp_path / "init.pt"
    save_checkpoint(init, _model(), {"name": "random"})
    out = tmp_path / "run"
    args = ["--init", str(init), "--out", str(out), "--data-root", str(training_data_root), "--threads", "1",
            "--train-sets", "pairs", "--val-sets", "val", "--crop", "64x48", "--batch", "2", "--points", "8",
            "--val-every", "1000"]
    assert train_fine.main([*args, "--max-minutes", "0.05"]) == 0
    first = torch.load(out / "last.pt", weights_only=True)["step"]
    assert first >= 1 and (out / "best.pt").exists() and (out / "init_val.json").exists()
    assert train_fine.main([*args, "--max-minutes", "0.1"]) == 0
    assert "resumed from" in (out / "train.log").read_text()
    assert torch.load(out / "last.pt", weights_only=True)["step"] > first


def test_local_expectation_is_not_pulled_to_the_window_centre():
    from distillmatch_ros.model.fine import local_expectation, window_offsets
    win = window_offsets(5, 4.0).view(1, 1, 25, 2)  # offsets -8..8 around 0
    logits = torch.zeros(1, 1, 25)
    logits[0, 0, 4] = 3.0  # one clear peak at the top-right corner cell (+8, -8)
    soft = (torch.softmax(logits, -1).unsqueeze(-1) * win).sum(2)
    local = local_expectation(logits, win, 5)
    # The whole-window soft-argmax lands well inside (the flat rest pulls it to the centre);
    # around the argmax only the neighbours weigh in, and the corner clamps to the peak.
    assert soft[0, 0, 0] < 5.0
    assert local[0, 0, 0] > 7.0 and local[0, 0, 1] < -7.0
    logits = torch.full((1, 1, 25), -10.0)
    logits[0, 0, 12], logits[0, 0, 13] = 2.0, 2.0  # two equal cells: halfway between them
    torch.testing.assert_close(local_expectation(logits, win, 5), torch.tensor([[[2.0, 0.0]]]), atol=1e-3, rtol=0)


def test_old_checkpoints_keep_the_whole_window_read_out():
    cfg = {k: v for k, v in make_config("tiny").items() if k != "fine_expectation"}
    assert complete_config(cfg)["fine_expectation"] == "soft"
    assert make_config("tiny")["fine_expectation"] == "local"
    assert _model().cross_fine.level4.local and not _model(fine_expectation="soft").cross_fine.level4.local
