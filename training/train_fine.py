"""Train the cross-modal fine stage on ground-truth matches, with the rest of a trained model frozen.

    python -m training.train_fine --init models/distillmatch_tiny.pt --out runs/fine --max-minutes 90

A curriculum stage after ``train_matcher``: the coarse level of ``--init`` is kept as it is and
only ``cross_fine`` (its own fine features over the frozen ImageNet taps, the window attention
and the sub-pixel head) learns. A step therefore runs no transformer, no semantic branch and no
coarse matching: the frozen backbone taps (forward only) and the fine stage on many matches per
image, so CPU steps are cheap and every image supervises ``--points`` matches.

Each match starts where inference starts: the visible point at a 1/8 cell centre and the thermal
point at the centre of the 1/8 cell that a coarse match would pick (the true one, or a neighbour
when the exact point is near a cell border, drawn with ``--coarse-noise`` px of jitter). Losses
are ``training.losses_match.fine_losses``. Resumes from ``OUT/last.pt``; keeps ``OUT/best.pt``
(a full inference checkpoint) by the validation score of ``train_matcher`` (mean AUC@5/10 over
the validation sets, distillmatch_ros/evaluation.py, the real inference path); logs to ``OUT/train.log``.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from distillmatch_ros.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from distillmatch_ros.model import build_model
from distillmatch_ros.model.distillmatch import cell_centres
from training.losses_match import apply_h, cell_of, coarse_ground_truth, fine_losses, sample_gt_pairs
from training.train_matcher import PairSource, lr_at, score_of, validate

REPO = Path(__file__).resolve().parents[1]

DEFAULTS = {
    "data": {"base_hw": [320, 416], "p_pseudo_ir": 0.0, "v2i_gan": "models/v2i_gan.pt"},
    "train": {"lr": 1e-3, "warmup_steps": 100, "weight_decay": 0.01, "grad_clip": 1.0},
    "loss": {"fine4": 1.0, "fine2": 1.0, "fine_reg": 1.0, "subpixel": 1.0},
}


def fine_mode(model) -> None:
    """Everything frozen in eval mode (BatchNorm statistics kept) except the fine stage."""
    model.eval()
    model.cross_fine.train()


def cell_texture(img: torch.Tensor) -> torch.Tensor:
    """Mean gradient magnitude of each 1/8 cell, [B, cells] (row-major like the coarse grid)."""
    gx = img[..., :, 1:] - img[..., :, :-1]
    gy = img[..., 1:, :] - img[..., :-1, :]
    mag = torch.nn.functional.pad(gx.abs(), (0, 1)) + torch.nn.functional.pad(gy.abs(), (0, 0, 0, 1))
    return torch.nn.functional.avg_pool2d(mag, 8).flatten(1)


def start_points(batch, points: int, coarse_noise: float, gen: torch.Generator, textured: float = 1.0):
    """Visible cell centres, the thermal cell centres a coarse match would give, and a mask.

    With ``textured`` > 0, cells are drawn in proportion to the texture of both images there
    (to that power): the coarse level returns its confident matches on structure, and a flat
    cell (sky, road) has no position to learn, only noise to add to the gradient.
    """
    h, w = batch["visible"].shape[-2:]
    gh, gw = h // 8, w // 8
    H = batch["H_t2v"].float()
    gt = coarse_ground_truth(H, gh, gw)
    if textured > 0:
        tv = cell_texture(batch["visible"].float())
        tt = torch.gather(cell_texture(batch["thermal"].float()), 1, gt["match_t"])
        weight = ((tv * tt).clamp(min=0).sqrt() + 1e-3) ** textured
        gt = dict(gt, positive=gt["positive"].float() * weight)
    idx_v, _, mask = sample_gt_pairs(gt, points, generator=gen)
    pv = cell_centres(idx_v, gw)
    p_true = apply_h(torch.linalg.inv(H), pv)
    jitter = torch.randn(p_true.shape, generator=gen) * coarse_noise
    cell, inside = cell_of(p_true + jitter, gw, gh)
    pt0 = cell_centres(cell, gw)
    # The exact point must be on real thermal content (warped borders are black, not scene).
    g = torch.stack([(p_true[..., 0] + 0.5) / w * 2 - 1, (p_true[..., 1] + 0.5) / h * 2 - 1], dim=-1)
    on_content = torch.nn.functional.grid_sample(batch["valid_thermal"].float(), g.unsqueeze(2),
                                                 align_corners=False).squeeze(1).squeeze(-1) > 0.99
    return pv, pt0, mask & inside & on_content


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--init", default=str(REPO / "models/distillmatch_tiny.pt"),
                    help="trained checkpoint whose coarse level is kept (its fine stage is replaced)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--max-minutes", type=float, default=60.0, help="time budget; the LR schedule follows it")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch", type=int, default=16, help="crops per step")
    ap.add_argument("--points", type=int, default=64, help="supervised matches per crop")
    ap.add_argument("--crop", default="160x128", help="WxH of the training crops (the stage only looks locally)")
    ap.add_argument("--textured", type=float, default=2.0,
                    help="draw cells in proportion to their texture to this power (0: uniformly)")
    ap.add_argument("--coarse-noise", type=float, default=2.5, help="px of jitter before picking the thermal cell")
    ap.add_argument("--val-every", type=int, default=400)
    ap.add_argument("--train-sets", default="roadscene:train,tno,m3svd",
                    help="aligned pair folders under --data-root, comma-separated, ':split' selects a split.json part")
    ap.add_argument("--val-sets", default="roadscene_homography,roadscene_deform,m3svd_homography",
                    help="npz sets under --data-root for validation, comma-separated")
    ap.add_argument("--val-limit", type=int, default=None, help="pairs per validation set (default: all)")
    ap.add_argument("--set", action="append", default=[], help="model config override key=value (e.g. fine_window_2=5)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = json.loads(json.dumps(DEFAULTS))
    cfg["data"]["val_limit"] = args.val_limit
    # "path" or "path:split" (a missing split means the set's default)
    cfg["data"]["train_sets"] = [dict(zip(("path", "split"), item.split(":"), strict=False))
                                 for item in args.train_sets.split(",")]
    cfg["data"]["val_sets"] = args.val_sets.split(",")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_f = open(out_dir / "train.log", "a")

    def log(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        log_f.write(line + "\n")
        log_f.flush()

    import yaml
    init = read_checkpoint(args.init)
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    mcfg = dict(init["config"], fine_stage="cross", pretrained_backbone=False, **overrides)
    model = build_model(mcfg)
    own = model.state_dict()
    kept = {k: v.float() for k, v in init["state_dict"].items() if k in own and own[k].shape == v.shape
            and not k.startswith("cross_fine.")}
    model.load_state_dict(kept, strict=False)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("cross_fine."))
    n_train = sum(p.numel() for p in model.cross_fine.parameters())
    log(f"init {args.init}: kept {len(kept)} tensors; training cross_fine only ({n_train / 1e3:.0f} k parameters); "
        f"config {json.dumps({k: mcfg[k] for k in mcfg if 'fine' in k})}")
    # Pairs are held at the working size and cut into crops of about the working scale
    # (0.8-1.3 source pixels per crop pixel): the fine stage needs only local context, and the
    # frozen backbone taps, most of a step's time, scale with the pixels.
    cfg["data"]["base_hw"] = [model.config["input_size"][1], model.config["input_size"][0]]
    crop_w, crop_h = (int(v) for v in args.crop.lower().split("x"))
    full = min(cfg["data"]["base_hw"][1] / crop_w, cfg["data"]["base_hw"][0] / crop_h)
    synth_conf = {"crop_scale": (0.8 / full, min(1.0, 1.3 / full))}
    source = PairSource(cfg, Path(args.data_root), torch.device("cpu"), args.seed, (crop_h, crop_w),
                        use_pseudo_ir=False)
    log(f"{source.n} training pairs at {cfg['data']['base_hw'][1]}x{cfg['data']['base_hw'][0]}, "
        f"crops {crop_w}x{crop_h}: {[s['path'] for s in cfg['data']['train_sets']]}")
    opt = torch.optim.AdamW(model.cross_fine.parameters(), lr=cfg["train"]["lr"],
                            weight_decay=cfg["train"]["weight_decay"])
    point_gen = torch.Generator().manual_seed(args.seed + 11)
    step, elapsed_before, best = 0, 0.0, -1.0
    last_path = out_dir / "last.pt"
    if last_path.exists():
        st = torch.load(last_path, map_location="cpu", weights_only=True)
        model.cross_fine.load_state_dict(st["cross_fine"])
        opt.load_state_dict(st["optimizer"])
        step, elapsed_before, best = int(st["step"]), float(st["elapsed"]), float(st["best"])
        source.gen.set_state(st["gen_state"])
        source.cpu_gen.set_state(st["cpu_gen_state"])
        point_gen.set_state(st["point_gen_state"])
        log(f"resumed from {last_path} at step {step} (best {best:.3f})")
    else:
        ref = validate(load_checkpoint(args.init)[0], cfg, Path(args.data_root), "cpu", cfg["data"]["val_limit"])
        log("val of --init: " + " ".join(f"{k}={v:.3f}" for k, v in ref.items()) + f" score={score_of(ref):.3f}")
        (out_dir / "init_val.json").write_text(json.dumps(ref, indent=1))

    def save_state() -> None:
        torch.save({"cross_fine": model.cross_fine.state_dict(), "optimizer": opt.state_dict(), "step": step,
                    "elapsed": elapsed_before + time.time() - t_start, "best": best,
                    "gen_state": source.gen.get_state(), "cpu_gen_state": source.cpu_gen.get_state(),
                    "point_gen_state": point_gen.get_state()}, out_dir / "last.tmp")
        os.replace(out_dir / "last.tmp", last_path)

    def run_validation() -> None:
        nonlocal best
        metrics = validate(model, cfg, Path(args.data_root), "cpu", cfg["data"]["val_limit"])
        fine_mode(model)
        sc = score_of(metrics)
        log(f"val step {step}: " + " ".join(f"{k}={v:.3f}" for k, v in metrics.items()) + f" score={sc:.3f}")
        if sc > best:
            best = sc
            card = {"name": "distillmatch_tiny", "step": step, "val": metrics, "init": str(args.init),
                    "fine_training": {**vars(args), "config": cfg},
                    "train_seconds": elapsed_before + time.time() - t_start}
            save_checkpoint(out_dir / "best.pt", model, card, half=True)
            log(f"new best {sc:.3f} -> {out_dir / 'best.pt'}")

    budget_s = args.max_minutes * 60
    t_start = last_save = time.time()
    step0 = step
    fine_mode(model)
    w = cfg["loss"]
    windows = (model.config["fine_window_4"], model.config["fine_window_2"])
    while True:
        elapsed = elapsed_before + time.time() - t_start
        if elapsed >= budget_s:
            break
        lr = lr_at(elapsed / budget_s, step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, source.n, (args.batch,), generator=source.cpu_gen)
        batch = source.synth(source.vis[idx], source.th[idx], out_hw=source.out_hw, generator=source.gen,
                             pseudo_ir=None, p_pseudo_ir=0.0, conf=synth_conf)
        pv, pt0, mask = start_points(batch, args.points, args.coarse_noise, point_gen, args.textured)
        out = model.forward_fine(batch["visible"], batch["thermal"], pv, pt0)
        losses = fine_losses(out, batch["H_t2v"].float(), mask, windows)
        err = losses.pop("fine_err_px")
        total = sum(w[k] * v for k, v in losses.items())
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.cross_fine.parameters(), cfg["train"]["grad_clip"])
        opt.step()
        step += 1
        if step % 25 == 0:
            with torch.no_grad():
                m = mask.float()
                truth4 = apply_h(torch.linalg.inv(batch["H_t2v"]), pv)
                e4 = ((out["fine4_thermal"] - truth4).norm(dim=-1) * m).sum() / m.sum()
            log(f"step {step} lr={lr:.2e} loss={total.item():.4f} "
                + " ".join(f"{k}={v.item():.4f}" for k, v in losses.items())
                + f" err4_px={e4.item():.2f} final_err_px={err.item():.2f} "
                f"({(time.time() - t_start) / max(step - step0, 1):.2f} s/step)")
        if step % args.val_every == 0:
            run_validation()
        if time.time() - last_save > 300:
            save_state()
            last_save = time.time()
    run_validation()
    save_state()
    log(f"done: {step} steps, best score {best:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
