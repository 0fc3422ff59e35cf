"""V2I-GAN training step, its loss terms, and the shipped PseudoInfrared runtime."""
from pathlib import Path

import numpy as np
import pytest
import torch

from distillmatch_ros.errors import CheckpointError, InputError
from distillmatch_ros.pseudo_infrared import FORMAT, PseudoInfrared, TranslationGenerator, thermal_profile
from training.v2i_gan import V2IGAN, GanConfig, sga_loss, ssim

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


def _toy_pairs(n=4, s=32, seed=0):
    """Visible blobs and a 'thermal' that is a fixed function of them (learnable translation)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, s // 8, s // 8, generator=g)
    vis = torch.nn.functional.interpolate(low, size=(s, s), mode="bilinear", align_corners=False)
    th = (1.0 - vis[:, 2:3]) * 0.8 + 0.1
    return vis, th


def test_one_gan_step_runs_and_loss_goes_down():
    torch.manual_seed(0)
    gan = V2IGAN(GanConfig(width=8, n_res=1, d_width=8, lr=1e-3))
    vis, th = _toy_pairs()
    before = [p.detach().clone() for p in gan.g_vi.parameters()]
    first = gan.step(vis, th)
    assert set(first) >= {"adv", "cyc", "pair", "sga", "ssim", "tv", "g_total", "d"}
    assert all(np.isfinite(v) for v in first.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, gan.g_vi.parameters(), strict=True))
    for _ in range(25):
        last = gan.step(vis, th)
    assert last["pair"] < first["pair"] and last["g_total"] < first["g_total"]


def test_ssim_and_sga_behave():
    x = torch.rand(2, 1, 32, 32)
    assert abs(float(ssim(x, x)) - 1.0) < 1e-5
    assert float(ssim(x, torch.rand_like(x))) < 0.2
    ramp = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(1, 1, 32, 32)
    # the same edges (either polarity) align; edges at other places do not
    assert float(sga_loss(ramp, 1 - ramp)) < 1e-3
    assert float(sga_loss(ramp, ramp.transpose(-1, -2))) > 0.5


def _export(tmp_path, gen=None, **over):
    gen = gen or TranslationGenerator(width=8, n_res=1)
    blob = {"format": FORMAT, "version": 1, "config": dict(gen.conf),
            "state_dict": gen.state_dict(), "card": {"name": "test"}}
    blob.update(over)
    p = tmp_path / "g.pt"
    torch.save(blob, p)
    return p


def test_pseudo_infrared_load_and_call(tmp_path):
    torch.manual_seed(0)
    p = _export(tmp_path)
    pir = PseudoInfrared.from_pretrained(p)
    assert pir.card["name"] == "test"
    for shape in ((37, 53, 3), (40, 64), (9, 12, 3)):
        img = (np.random.default_rng(0).random(shape) * 255).astype(np.uint8)
        out = pir(img)
        assert out.dtype == np.uint8 and out.shape == shape[:2]
    t = pir.translate_tensor(torch.rand(2, 3, 20, 30))
    assert t.shape == (2, 1, 20, 30) and float(t.min()) >= 0 and float(t.max()) <= 1


def test_pseudo_infrared_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        PseudoInfrared.from_pretrained(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError, match="cannot read"):
        PseudoInfrared.from_pretrained(bad)
    with pytest.raises(CheckpointError, match="not a V2I-GAN"):
        PseudoInfrared.from_pretrained(_export(tmp_path, format="something-else"))
    wrong = TranslationGenerator(width=8, n_res=2).state_dict()
    with pytest.raises(CheckpointError, match="do not match"):
        PseudoInfrared.from_pretrained(_export(tmp_path, config={"width": 8, "n_res": 1}, state_dict=wrong))
    good = _export(tmp_path)
    raw = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError):
        PseudoInfrared.from_pretrained(tmp_path / "trunc.pt")
    pir = PseudoInfrared.from_pretrained(good)
    for bad_in in (np.zeros((20, 20, 3), np.float32), np.zeros((4, 4, 3), np.uint8),
                   np.zeros((20, 20, 4), np.uint8), [[1, 2]], np.zeros((2, 20, 20, 3), np.uint8)):
        with pytest.raises(InputError):
            pir(bad_in)


def test_standardised_losses_ignore_the_target_cameras_brightness():
    """No infrared term can be lowered by guessing brightness or contrast: the same scene at
    another gain and offset gives the same paired and SSIM losses."""
    torch.manual_seed(0)
    gan = V2IGAN(GanConfig(width=8, n_res=1, d_width=8, output_norm="standardised"))
    vis, th = _toy_pairs()
    torch.manual_seed(1)
    _, a, _ = gan.generator_losses(vis, th)
    torch.manual_seed(1)
    _, b, _ = gan.generator_losses(vis, th * 0.3 + 0.05)   # a darker camera, same scene
    assert abs(float(a["ssim"].detach()) - float(b["ssim"].detach())) < 1e-4
    plain = V2IGAN(GanConfig(width=8, n_res=1, d_width=8, output_norm="none"))
    _, c, _ = plain.generator_losses(vis, th)
    _, d, _ = plain.generator_losses(vis, th * 0.3 + 0.05)
    assert abs(float(c["pair"].detach()) - float(d["pair"].detach())) > 0.02   # the old loss did reward it


def test_profiles_render_the_cameras_look_and_reject_bad_ones(tmp_path):
    torch.manual_seed(0)
    gen = TranslationGenerator(width=8, n_res=1, output_norm="standardised")
    with torch.no_grad():
        gen.head.weight.mul_(10.0)   # an untrained output is nearly flat, and flat stays flat
    p = _export(tmp_path, gen, profiles={"default": [0.4, 0.15], "dark": [0.16, 0.1]})
    pir = PseudoInfrared.from_pretrained(p)
    img = (np.random.default_rng(0).random((64, 80, 3)) * 255).astype(np.uint8)
    for name, (mean, std) in (("default", (0.4, 0.15)), ("dark", (0.16, 0.1))):
        pir.set_profile(name)
        out = pir(img).astype(np.float64) / 255
        assert abs(out.mean() - mean) < 0.02 and abs(out.std() - std) < 0.02, (name, out.mean(), out.std())
    pir.set_profile((0.7, 0.05))
    assert abs(pir(img).mean() / 255 - 0.7) < 0.02
    for bad in ("nope", (1.5, 0.1), (0.5, 0.0)):
        with pytest.raises(InputError):
            pir.set_profile(bad)
    plain = PseudoInfrared.from_pretrained(_export(tmp_path))      # a file from before profiles
    with pytest.raises(InputError, match="no thermal profile"):
        plain.set_profile("default")
    frames8 = [np.full((8, 8), 51, np.uint8), np.tile(np.array([0, 255], np.uint8), (8, 4))]
    mean, std = thermal_profile(frames8)
    assert abs(mean - (0.2 + 0.5) / 2) < 1e-6 and abs(std - 0.25) < 1e-6
    assert abs(thermal_profile([np.full((4, 4), 65535, np.uint16)])[0] - 1.0) < 1e-9
    with pytest.raises(InputError):
        thermal_profile([])


def test_shipped_generator_beats_gray_baselines_on_val(shared_data):
    """The shipped models/v2i_gan.pt beats gray and inverted gray in SSIM and L1 on RoadScene val
    and on the M3SVD val night frames (a few of each; the figures per condition are in its card)."""
    path = REPO / "models" / "v2i_gan.pt"
    if not path.exists():
        pytest.skip("models/v2i_gan.pt not shipped yet")
    import distillmatch_ros
    from training.train_v2i_gan import grouped_metrics, val_groups
    pir = distillmatch_ros.PseudoInfrared.from_pretrained()
    groups = val_groups(shared_data, max_side=320, per_clip=2)
    groups = {g: p[:6] for g, p in groups.items() if g in ("roadscene_val", "m3svd_val_night")}
    if "m3svd_val_night" not in groups:
        pytest.skip(f"no m3svd_val under {shared_data}")
    m = grouped_metrics(pir, groups)
    for g, r in m.items():
        for base in ("gray", "inverted_gray"):
            assert r["pseudo_ir"]["l1"] < r[base]["l1"], (g, r)
            assert r["pseudo_ir"]["ssim"] > r[base]["ssim"], (g, r)


def test_training_cli_exports_and_resumes(tmp_path):
    import cv2

    from training.train_v2i_gan import main
    rig = tmp_path / "rig"
    (rig / "visible").mkdir(parents=True)
    (rig / "thermal").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        v = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        cv2.imwrite(str(rig / "visible" / f"{i}.png"), v)
        cv2.imwrite(str(rig / "thermal" / f"{i}.png"), 255 - v[..., 2])
    common = ["--pairs", str(rig), "--data-root", str(tmp_path / "none"), "--batch", "2", "--crop", "32",
              "--width", "8", "--n-res", "1", "--out", str(tmp_path / "run"), "--export", str(tmp_path / "g.pt"),
              "--minutes", "10", "--log-every", "1"]
    main(common + ["--steps", "2"])
    assert PseudoInfrared.from_pretrained(tmp_path / "g.pt").card["steps"] == 2
    main(common + ["--steps", "3"])       # resumes from run/last.pt: one more step, not three
    st = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert st["step"] == 3
    assert PseudoInfrared.from_pretrained(tmp_path / "g.pt").card["steps"] == 3
