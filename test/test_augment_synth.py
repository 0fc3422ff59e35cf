"""Synthesised pairs: the returned H_t2v must be the exact thermal -> visible pixel map."""

import pytest
import torch

from training.augment import DEFAULT_SYNTH_CONF, sample_rig_homographies, synth_batch, warp_points

torch.set_num_threads(1)


def _smooth_scene(b, h, w, seed=0):
    """Smooth random images (low-frequency), so bilinear sampling error is tiny."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(b, 3, h // 16, w // 16, generator=g)
    return torch.nn.functional.interpolate(low, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


def _sample(img, pts):
    """Bilinear sample [B,1,H,W] at [B,N,2] pixel coords (centres at integers)."""
    H, W = img.shape[-2:]
    g = torch.stack([(2 * pts[..., 0] + 1) / W - 1, (2 * pts[..., 1] + 1) / H - 1], -1)[:, :, None]
    return torch.nn.functional.grid_sample(img, g.float(), align_corners=False)[:, 0, :, 0]


def test_H_maps_thermal_pixels_onto_same_scene_point():
    vis = _smooth_scene(6, 240, 300)
    gray = (vis * torch.tensor([0.114, 0.587, 0.299]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    out = synth_batch(vis, gray.clone(), out_hw=(96, 128), generator=torch.Generator().manual_seed(1),
                      conf={"photometric": False})
    assert out["visible"].shape == (6, 1, 96, 128) and out["thermal"].shape == (6, 1, 96, 128)
    assert out["H_t2v"].shape == (6, 3, 3)
    g = torch.Generator().manual_seed(2)
    q = torch.stack([torch.rand(6, 400, generator=g) * 127, torch.rand(6, 400, generator=g) * 95], -1)
    p = warp_points(out["H_t2v"].double(), q.double())
    inside = (p[..., 0] > 1) & (p[..., 0] < 126) & (p[..., 1] > 1) & (p[..., 1] < 94)
    tv = _sample(out["thermal"], q)
    vv = _sample(out["visible"], p)
    ok = inside & (_sample(out["valid_thermal"].float(), q) > 0.999)
    assert ok.sum() > 200
    err = (tv - vv).abs()[ok]
    assert float(err.mean()) < 0.01, float(err.mean())
    # a wrong H (identity) must disagree: the check can fail
    wrong = (_sample(out["visible"], q) - tv).abs()[ok]
    assert float(wrong.mean()) > 3 * float(err.mean())


def test_homography_ranges_are_rig_like():
    # without perspective the upper 2x2 block is exactly s*R
    H = sample_rig_homographies(500, (256, 320), conf={"persp": 0.0}, generator=torch.Generator().manual_seed(0))
    ang = torch.rad2deg(torch.atan2(H[:, 1, 0], H[:, 0, 0])).abs()
    assert float(ang.max()) <= DEFAULT_SYNTH_CONF["rot_deg"] + 1e-6
    assert float(ang.max()) > 10
    det = torch.linalg.det(H[:, :2, :2]).sqrt()
    lo, hi = DEFAULT_SYNTH_CONF["scale"]
    assert lo - 1e-6 <= float(det.min()) and float(det.max()) <= hi + 1e-6
    shift = (H[:, 0, 2] + H[:, 0, 0] * 159.5 + H[:, 0, 1] * 127.5 - 159.5).abs()
    assert float(shift.max()) <= 0.1 * 320 + 1e-6


def test_photometric_and_pseudo_ir_paths_and_reproducibility():
    vis = _smooth_scene(8, 120, 160, seed=3)
    th = vis[:, 1:2].clone()
    calls = []

    def fake_pir(x):
        calls.append(x.shape[0])
        assert x.shape[1] == 3
        return torch.full_like(x[:, :1], 0.5)

    a = synth_batch(vis, th, (64, 96), torch.Generator().manual_seed(5), pseudo_ir=fake_pir, p_pseudo_ir=0.5)
    b = synth_batch(vis, th, (64, 96), torch.Generator().manual_seed(5), pseudo_ir=fake_pir, p_pseudo_ir=0.5)
    assert torch.equal(a["visible"], b["visible"]) and torch.equal(a["H_t2v"], b["H_t2v"])
    assert 0 < int(a["is_pseudo_ir"].sum()) < 8 and calls[0] == int(a["is_pseudo_ir"].sum())
    for k in ("visible", "thermal"):
        assert float(a[k].min()) >= 0 and float(a[k].max()) <= 1
    none = synth_batch(vis, th, (64, 96), torch.Generator().manual_seed(5))
    assert not bool(none["is_pseudo_ir"].any())


def test_uint8_input_and_bad_shapes():
    vis = (torch.rand(2, 3, 50, 60) * 255).to(torch.uint8)
    th = (torch.rand(2, 1, 50, 60) * 255).to(torch.uint8)
    out = synth_batch(vis, th, (32, 48), torch.Generator().manual_seed(0))
    assert out["visible"].dtype == torch.float32
    with pytest.raises(ValueError):
        synth_batch(vis, th[:, :, :40], (32, 48))
