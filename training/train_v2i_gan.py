"""Train the V2I-GAN (visible -> pseudo-infrared) on aligned visible/thermal pairs.

Why a time budget: the same script runs for 45 minutes on one CPU thread or a few minutes on a
GPU; ``--minutes`` (and/or ``--steps``) sets the schedule, the learning rate decays linearly over
the second half of it, and runs resume from ``<out>/last.pt`` with the elapsed time restored.

Examples::

    # CPU, background, 1 thread, RoadScene train split + TNO (never the val scenes)
    nohup python -m training.train_v2i_gan --minutes 50 --threads 1 --out runs/v2i_gan \\
        --export models/v2i_gan.pt > runs/v2i_gan.log 2>&1 &
    # GPU
    python -m training.train_v2i_gan --device cuda --minutes 6 --batch 32 --crop 192
    # your own rig: any folder with visible/ + thermal/ aligned pairs
    python -m training.train_v2i_gan --pairs /data/myrig --pairs /data/myrig2 --minutes 60
    # evaluate a shipped generator on the 20 RoadScene val scenes and draw the figure
    python -m training.train_v2i_gan --eval-only models/v2i_gan.pt --figure docs/v2i_gan_val.png
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from distillmatch_ros.pseudo_infrared import render, standardise, thermal_profile
from training.datasets import (
    PairCropDataset,
    default_data_root,
    device_crop_batch,
    load_aligned_pairs,
    pairs_to_tensors,
    split_names,
)
from training.v2i_gan import V2IGAN, GanConfig, ssim

# M3SVD validation clips by the light they were filmed in (labelled by eye from their frames;
# the eight clips hold no smoke: smoke is only in the training clips 0117_1605 and 0117_1620).
M3SVD_VAL_CONDITIONS = {
    "0114_1551": "day", "0114_1609": "day", "0114_1611": "day",
    "0111_1753": "dusk",
    "0111_1803": "night", "0115_1831": "night", "0115_1834": "night", "0115_1847": "night",
}


def exposure_jitter(vis: torch.Tensor, generator: torch.Generator, p: float = 0.7) -> torch.Tensor:
    """Random gain (0.25-1.5, log-uniform) and gamma (0.7-1.6) on a fraction ``p`` of the images.

    Why: the target infrared does not change when the visible camera exposes differently, so the
    generator must not read heat from brightness; with the input stretch this teaches it so.
    """
    b = vis.shape[0]
    on = (torch.rand(b, generator=generator) < p).float().view(b, 1, 1, 1)
    gain = torch.exp(torch.empty(b).uniform_(np.log(0.25), np.log(1.5), generator=generator)).view(b, 1, 1, 1)
    gamma = torch.empty(b).uniform_(0.7, 1.6, generator=generator).view(b, 1, 1, 1)
    jit = (vis.clamp_min(1e-4) ** gamma.to(vis.device) * gain.to(vis.device)).clamp(0, 1)
    return on.to(vis.device) * jit + (1 - on.to(vis.device)) * vis


def gather_train_pairs(args):
    """RoadScene train split + TNO + the M3SVD training clips by default (day, dusk, night, smoke),
    or the ``--pairs`` folders (all of each). Returns (pairs, {camera: thermal (mean, std)}), the
    profiles from the training frames only, plus ``default``: the cameras' average."""
    sources = []
    if args.pairs:
        sources = [(Path(p).name, load_aligned_pairs(p, split_names(p, "train"), args.max_side)) for p in args.pairs]
    else:
        root = Path(args.data_root)
        if not (root / "roadscene").is_dir():
            raise SystemExit(f"no training data: {root}/roadscene missing (pass --data-root or --pairs)")
        sources.append(("roadscene", load_aligned_pairs(root / "roadscene", split_names(root / "roadscene", "train"),
                                                        args.max_side)))
        if (root / "tno").is_dir() and not args.no_tno:
            sources.append(("tno", load_aligned_pairs(root / "tno", None, args.max_side)))
        if (root / "m3svd").is_dir() and not args.no_m3svd:
            sources.append(("m3svd", load_aligned_pairs(root / "m3svd", None, args.max_side)))
    profiles = {name: thermal_profile([th for _, th in ps]) for name, ps in sources if ps}
    profiles["default"] = tuple(float(np.mean([p[i] for p in profiles.values()])) for i in (0, 1))
    return [p for _, ps in sources for p in ps], profiles


# The training camera whose thermal profile renders each validation group (never the val frames').
GROUP_PROFILE = {"roadscene_val": "roadscene", "m3svd_val": "m3svd"}


def group_profile(group: str, profiles) -> str:
    for prefix, name in GROUP_PROFILE.items():
        if group.startswith(prefix) and name in profiles:
            return name
    return "default"


def profiled(gray: np.ndarray, profile) -> np.ndarray:
    """A gray image standardised and rendered with a thermal profile (the fair baseline of a
    standardised generator: the same brightness knowledge, no translation)."""
    z = standardise(torch.from_numpy(gray).float()[None, None] / 255)
    return (render(z, *profile)[0, 0] * 255 + 0.5).to(torch.uint8).numpy()


def baseline_and_model_metrics(translate, val_pairs, profile=None):
    """Mean SSIM and L1 (grey levels 0..255) to the real infrared for the model and baselines.

    ``translate(bgr uint8) -> uint8``. Baselines: grayscale visible, inverted grayscale, and with
    a ``profile`` also grayscale rendered with it.
    """
    rows = {"pseudo_ir": [], "gray": [], "inverted_gray": []}
    if profile is not None:
        rows["gray_profiled"] = []
    for vis, th in val_pairs:
        gray = cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY)
        cands = {"pseudo_ir": translate(vis), "gray": gray, "inverted_gray": 255 - gray}
        if profile is not None:
            cands["gray_profiled"] = profiled(gray, profile)
        t = torch.from_numpy(th).float()[None, None] / 255
        for k, img in cands.items():
            x = torch.from_numpy(img).float()[None, None] / 255
            rows[k].append((float(ssim(x, t)), float((x - t).abs().mean() * 255)))
    return {k: {"ssim": float(np.mean([r[0] for r in v])), "l1": float(np.mean([r[1] for r in v]))}
            for k, v in rows.items()}


def render_figure(translate, val_pairs, path, n=4, width=200):
    """Rows of [visible | pseudo-infrared | real infrared] for a few val scenes, saved as PNG."""
    rows = []
    for vis, th in val_pairs[:n]:
        pir = translate(vis)
        s = width / vis.shape[1]
        size = (width, int(round(vis.shape[0] * s)))
        tiles = [cv2.resize(vis, size, interpolation=cv2.INTER_AREA)]
        tiles += [cv2.cvtColor(cv2.resize(g, size, interpolation=cv2.INTER_AREA), cv2.COLOR_GRAY2BGR)
                  for g in (pir, th)]
        rows.append(np.concatenate(tiles, 1))
    w = max(r.shape[1] for r in rows)
    img = np.concatenate([np.pad(r, ((0, 4), (0, w - r.shape[1]), (0, 0))) for r in rows], 0)
    head = np.full((22, img.shape[1], 3), 255, np.uint8)
    for i, txt in enumerate(("visible", "pseudo-infrared (V2I-GAN)", "real infrared")):
        cv2.putText(head, txt, (i * width + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.concatenate([head, img], 0), [cv2.IMWRITE_PNG_COMPRESSION, 9])


def val_pairs_default(data_root, max_side=None):
    root = Path(data_root) / "roadscene"
    return load_aligned_pairs(root, split_names(root, "val"), max_side)


def val_groups(data_root, max_side=None, per_clip=None):
    """{group: pairs}: RoadScene val (day) and the M3SVD val clips by condition; never trained on."""
    groups = {}
    rs = Path(data_root) / "roadscene"
    if rs.is_dir():
        groups["roadscene_val"] = val_pairs_default(data_root, max_side)
    mv = Path(data_root) / "m3svd_val"
    if mv.is_dir():
        names = split_names(mv)
        for clip, cond in M3SVD_VAL_CONDITIONS.items():
            clip_names = [n for n in names if n.startswith(clip + "_")][:per_clip]
            groups.setdefault(f"m3svd_val_{cond}", []).extend(load_aligned_pairs(mv, clip_names, max_side))
    return groups


def grouped_metrics(pir, groups):
    """:func:`baseline_and_model_metrics` per group, plus the pair counts. ``pir``: a
    PseudoInfrared; a standardised one renders each group with its camera's training profile."""
    out = {}
    for name, pairs in groups.items():
        if not pairs:
            continue
        profile = None
        row = {"pairs": len(pairs)}
        if pir.standardised:
            row["profile"] = group_profile(name, pir.profiles)
            pir.set_profile(row["profile"])
            profile = pir.profile
        out[name] = {**row, **baseline_and_model_metrics(pir, pairs, profile)}
    if pir.standardised:
        pir.set_profile(None)
    return out


def metrics_table(m) -> str:
    """Markdown: one row per group, SSIM and L1 of the model and of the baselines."""
    extra = any("gray_profiled" in r for r in m.values())
    keys = ("pseudo_ir", "gray", "inverted_gray") + (("gray_profiled",) if extra else ())
    head = "| set (pairs) | pseudo-IR SSIM / L1 | gray SSIM / L1 | inverted gray SSIM / L1 |"
    head += " gray with the profile SSIM / L1 |" if extra else ""
    lines = [head, "|---" * (len(keys) + 1) + "|"]
    for g, r in m.items():
        cells = [f"{r[k]['ssim']:.3f} / {r[k]['l1']:.1f}" if k in r else "-" for k in keys]
        lines.append(f"| {g} ({r['pairs']}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(default_data_root()))
    ap.add_argument("--pairs", action="append", help="aligned pair folder(s) instead of RoadScene+TNO")
    ap.add_argument("--no-tno", action="store_true")
    ap.add_argument("--no-m3svd", action="store_true", help="leave the M3SVD training clips out")
    ap.add_argument("--init-generator", default=None,
                    help="start the V->I generator from this exported file (e.g. models/v2i_gan.pt)")
    ap.add_argument("--no-exposure-jitter", action="store_true")
    ap.add_argument("--output-norm", choices=("standardised", "none"), default="standardised",
                    help="standardised: losses on standardised infrared, rendered with a camera profile")
    ap.add_argument("--max-side", type=int, default=512)
    ap.add_argument("--out", default="runs/v2i_gan")
    ap.add_argument("--export", default=None, help="write the shipped generator file here at each checkpoint")
    ap.add_argument("--minutes", type=float, default=45.0)
    ap.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: time only)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ckpt-minutes", type=float, default=4.0)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--width", type=int, default=24)
    ap.add_argument("--n-res", type=int, default=4)
    ap.add_argument("--device-crops", type=int, default=-1,
                    help="1: cut crops on the device from pairs held there (default on CUDA); 0: OpenCV crops")
    ap.add_argument("--hold-hw", type=int, nargs=2, default=[352, 528],
                    help="with --device-crops: size (H W) the pairs are held at on the device")
    ap.add_argument("--eval-only", default=None, help="evaluate this generator file on the val scenes")
    ap.add_argument("--figure", default=None, help="with --eval-only: write an example figure (PNG)")
    ap.add_argument("--metrics-json", default=None)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)
    torch.manual_seed(args.seed)

    if args.eval_only:
        from distillmatch_ros.pseudo_infrared import PseudoInfrared
        pir = PseudoInfrared.from_pretrained(args.eval_only, device=args.device)
        groups = val_groups(args.data_root)
        m = grouped_metrics(pir, groups)
        print(metrics_table(m))
        if args.metrics_json:
            Path(args.metrics_json).write_text(json.dumps(m, indent=1))
        if args.figure:
            fig = [p for g in groups.values() for p in g[:: max(1, len(g) // 2)][:2]]
            render_figure(pir, fig, args.figure, n=len(fig))
        return m

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    pairs, profiles = gather_train_pairs(args)
    print(f"training pairs: {len(pairs)}; thermal profiles (mean, std): "
          + ", ".join(f"{k} {v[0]:.3f}/{v[1]:.3f}" for k, v in profiles.items()), flush=True)
    ds = PairCropDataset(pairs, crop=args.crop, scale=(0.35, 0.85), seed=args.seed)
    dev_crops = args.device_crops == 1 or (args.device_crops == -1 and dev.type == "cuda")
    if dev_crops:
        held = pairs_to_tensors(pairs, tuple(args.hold_hw), device=dev)
        crop_gen = torch.Generator().manual_seed(args.seed)
    cfg = GanConfig(width=args.width, n_res=args.n_res, output_norm=args.output_norm)
    gan = V2IGAN(cfg).to(dev)
    if args.init_generator and not (out / "last.pt").is_file():
        blob = torch.load(str(args.init_generator), map_location="cpu", weights_only=True)
        gan.g_vi.load_state_dict(blob["state_dict"])
        print(f"V->I generator initialised from {args.init_generator}", flush=True)
    jit_gen = torch.Generator().manual_seed(args.seed + 11)
    step, elapsed = 0, 0.0
    last = out / "last.pt"
    if last.is_file():
        st = torch.load(str(last), map_location=dev, weights_only=True)
        gan.load_state_dict(st["model"])
        gan.opt_g.load_state_dict(st["opt_g"])
        gan.opt_d.load_state_dict(st["opt_d"])
        step, elapsed = int(st["step"]), float(st["elapsed"])
        ds.rng = np.random.default_rng(args.seed + step)
        if dev_crops:
            crop_gen.manual_seed(args.seed + step)
        jit_gen.manual_seed(args.seed + 11 + step)
        print(f"resumed from {last} at step {step} ({elapsed / 60:.1f} min)", flush=True)
    val = {g: p[:: max(1, len(p) // 4)][:4] for g, p in val_groups(args.data_root, max_side=320, per_clip=20).items()}

    def save():
        st = {"model": gan.state_dict(), "opt_g": gan.opt_g.state_dict(), "opt_d": gan.opt_d.state_dict(),
              "step": step, "elapsed": elapsed}
        torch.save(st, str(out / "last.pt.tmp"))
        os.replace(out / "last.pt.tmp", last)
        if args.export:
            card = {"name": "v2i_gan", "steps": step, "train_minutes": round(elapsed / 60, 1),
                    "device": str(dev), "threads": args.threads, "batch": args.batch, "crop": args.crop,
                    "input_norm": cfg.input_norm, "output_norm": cfg.output_norm,
                    "exposure_jitter": not args.no_exposure_jitter,
                    "init": args.init_generator,
                    "data": (f"RoadScene train split + {'no ' if args.no_tno else ''}TNO + "
                             f"{'no ' if args.no_m3svd else ''}M3SVD training clips ({len(pairs)} pairs)")
                    if not args.pairs else list(args.pairs)}
            Path(args.export).parent.mkdir(parents=True, exist_ok=True)
            torch.save(gan.export_generator(card, profiles), str(args.export) + ".tmp")
            os.replace(str(args.export) + ".tmp", args.export)
        msg = f"checkpoint step {step} ({elapsed / 60:.1f} min)"
        if val:
            from distillmatch_ros.pseudo_infrared import PseudoInfrared
            pir = PseudoInfrared(gan.g_vi, device=dev, profiles=profiles)
            m = grouped_metrics(pir, val)
            gan.g_vi.train().requires_grad_(True)
            msg += "".join(f" {g} ssim {r['pseudo_ir']['ssim']:.3f} l1 {r['pseudo_ir']['l1']:.1f}"
                           for g, r in m.items())
        print(msg, flush=True)

    budget = args.minutes * 60
    t_ck = time.time()
    acc = {}
    while True:
        prog = max(elapsed / budget, step / args.steps if args.steps else 0.0)
        if prog >= 1.0:
            break
        for opt in (gan.opt_g, gan.opt_d):
            for g in opt.param_groups:
                g["lr"] = cfg.lr * min(1.0, 2.0 * (1.0 - prog))
        t0 = time.time()
        if dev_crops:
            vis, th = device_crop_batch(*held, args.batch, args.crop, (0.35, 0.85), crop_gen)
        else:
            batch = [ds[0] for _ in range(args.batch)]
            vis = torch.stack([b[0] for b in batch]).to(dev, non_blocking=True)
            th = torch.stack([b[1] for b in batch]).to(dev, non_blocking=True)
        if not args.no_exposure_jitter:
            vis = exposure_jitter(vis, jit_gen)
        losses = gan.step(vis, th)
        step += 1
        elapsed += time.time() - t0
        for k, v in losses.items():
            acc[k] = acc.get(k, 0.0) + v
        if step % args.log_every == 0:
            means = " ".join(f"{k} {v / args.log_every:.4f}" for k, v in acc.items())
            print(f"step {step} {elapsed / 60:.1f}min {means}", flush=True)
            acc = {}
        if time.time() - t_ck > args.ckpt_minutes * 60:
            save()
            t_ck = time.time()
    save()
    print("done", flush=True)


if __name__ == "__main__":
    main()
