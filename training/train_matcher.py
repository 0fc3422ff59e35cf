"""Train the DistillMatch matcher (any preset) on aligned visible/thermal pairs.

    python -m training.train_matcher --config training/configs/tiny.yaml --out runs/tiny
    torchrun --nproc_per_node=4 -m training.train_matcher --config ... --out ...   # DDP

Pairs are synthesised on the training device from aligned pairs warped by random rig-like
homographies (exact dense ground truth), optionally with the thermal side replaced by V2I-GAN
pseudo-infrared. The loss is ``l_kd*L_KD + l_ce*L_ce + L_coarse + L_fine + L_subpixel``.
Resumes from ``OUT/last.pt``; keeps ``OUT/best.pt`` (a compact inference checkpoint) by the
validation AUC (distillmatch_ros/evaluation.py); logs TensorBoard scalars and example match images to
``OUT/tb`` and a plain log to ``OUT/train.log``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch
import torch.distributed as dist
import yaml

from distillmatch_ros.checkpoint import read_checkpoint, save_checkpoint
from distillmatch_ros.errors import CheckpointError
from distillmatch_ros.model import build_model
from training.losses_kd import KDLoss, modality_ce
from training.losses_match import coarse_ground_truth, fine_losses, focal_coarse_loss, sample_gt_pairs

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- config
def load_config(path: str, overrides: List[str]) -> Dict[str, Any]:
    with open(path) as f:
        cfg = yaml.safe_load(f)
    for item in overrides:
        key, _, value = item.partition("=")
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    return cfg


# ----------------------------------------------------------------------------- distributed
def setup_distributed(device_arg: str | None):
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; a plain run is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_arg:
        device = torch.device(device_arg)
    else:
        device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world, rank, device


# ----------------------------------------------------------------------------- data
class PairSource:
    """Aligned pairs held on the device; each step draws a batch and synthesises warped pairs."""

    def __init__(self, cfg: Dict[str, Any], data_root: Path, device: torch.device, seed: int,
                 out_hw, use_pseudo_ir: bool):
        from training.augment import synth_batch
        from training.datasets import load_aligned_pairs, pairs_to_tensors, split_names
        self.synth = synth_batch
        pairs = []
        for s in cfg["data"]["train_sets"]:
            root = data_root / s["path"]
            if not root.exists():
                raise FileNotFoundError(f"training set {root} not found (set --data-root)")
            pairs += load_aligned_pairs(root, split_names(root, s.get("split")), max_side=800)
        if not pairs:
            raise RuntimeError("no training pairs found")
        self.vis, self.th = pairs_to_tensors(pairs, hw=tuple(cfg["data"]["base_hw"]), device=device)
        self.n = self.vis.shape[0]
        self.out_hw = tuple(out_hw)
        self.gen = torch.Generator().manual_seed(seed)           # augmentation draws
        self.cpu_gen = torch.Generator().manual_seed(seed + 7)   # which pairs form a batch
        self.p_pseudo_ir = float(cfg["data"]["p_pseudo_ir"]) if use_pseudo_ir else 0.0
        self.pseudo_ir = None
        if self.p_pseudo_ir > 0:
            from distillmatch_ros.pseudo_infrared import PseudoInfrared
            gan = PseudoInfrared.from_pretrained(REPO / cfg["data"]["v2i_gan"], device=device)
            self.pseudo_ir = gan.translate_tensor

    def batch(self, b: int) -> Dict[str, torch.Tensor]:
        idx = torch.randint(0, self.n, (b,), generator=self.cpu_gen).to(self.vis.device)
        return self.synth(self.vis[idx], self.th[idx], out_hw=self.out_hw, generator=self.gen,
                          pseudo_ir=self.pseudo_ir, p_pseudo_ir=self.p_pseudo_ir)


# ----------------------------------------------------------------------------- validation
def validate(model, cfg, data_root: Path, device, limit: int) -> Dict[str, float]:
    from distillmatch_ros.evaluation import evaluate_matcher
    from distillmatch_ros.matcher import Matcher
    was_training = model.training
    m = Matcher.from_model(model, backend="torch", device=str(device))
    out: Dict[str, float] = {}
    for name in cfg["data"]["val_sets"]:
        d = data_root / name
        if not d.exists():
            continue
        s = evaluate_matcher(m.match, str(d), limit=limit)
        for k in ("auc3", "auc5", "auc10", "prec3", "ncm"):
            out[f"{name}/{k}"] = float(s[k])
    model.train(was_training)
    return out


def score_of(metrics: Dict[str, float]) -> float:
    """Model selection: mean of AUC@5 and AUC@10 over the validation sets."""
    vals = [v for k, v in metrics.items() if k.endswith("/auc5") or k.endswith("/auc10")]
    return float(np.mean(vals)) if vals else -1.0


# ----------------------------------------------------------------------------- training
def compute_losses(net, model_cfg, batch, cfg, teacher=None, kd_fn=None, amp=False, device_type="cpu"):
    """The full training objective on one synthesised batch.

    Returns (total, {term: value}, mean fine error in px); ``net`` may be DDP-wrapped.
    """
    w = cfg["loss"]
    hw = batch["visible"].shape[-2:]
    # Ground truth in float32, outside autocast: bf16 coordinates would be off by ~1 px.
    gt = coarse_ground_truth(batch["H_t2v"].float(), hw[0] // 8, hw[1] // 8)
    idx_v, idx_t, mask = sample_gt_pairs(gt, int(cfg["train"]["fine_pairs"]))
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
        out = net(batch["visible"], batch["thermal"], coarse_pairs=(idx_v, idx_t), with_kd=kd_fn is not None)
    out = {k: (v.float() if v.is_floating_point() else v) for k, v in out.items()}
    losses = {"coarse": focal_coarse_loss(out["conf"], gt)}
    fl = fine_losses(out, batch["H_t2v"].float(), mask, (model_cfg["fine_window_4"], model_cfg["fine_window_2"]))
    fine_err = fl.pop("fine_err_px")
    if not w.get("fine_reg", 0.0):  # configs older than the term train without it
        fl.pop("fine_reg")
    losses.update(fl)
    if w["modality"] > 0:
        logits_v, logits_t = out["modality_logits"].chunk(2)
        losses["modality"] = modality_ce(logits_v, logits_t, batch.get("is_pseudo_ir"))
    if kd_fn is not None:
        with torch.no_grad(), torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
            imgs = torch.cat([batch["visible"], batch["thermal"]], dim=0)  # same order as the student
            t_feat = teacher(imgs).float()
        losses["kd"], _ = kd_fn(out["student_features"], t_feat)
    total = sum(w[k] * v for k, v in losses.items())
    return total, losses, fine_err


def read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    """Weights of an inference checkpoint (``best.pt``, a shipped model) or a training state,
    without building a model: ``--init`` may come from a different architecture config."""
    try:
        return read_checkpoint(path)["state_dict"]
    except CheckpointError as exc:
        try:  # a training state (OUT/last.pt) is a plain dict with a "model" section
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - unreadable: report the checkpoint reader's diagnosis
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
            return obj["model"]
        raise SystemExit(f"--init {path}: neither a checkpoint nor a training state ({exc})") from exc


def freeze_early_backbone(model, blocks: int) -> int:
    """Freeze the stem and the first ``blocks`` EfficientNet blocks (kept in eval mode, so their
    BatchNorm keeps ImageNet statistics). Returns the number of frozen parameters."""
    if blocks <= 0:
        return 0
    bb = model.texture.backbone
    mods = [bb._conv_stem, bb._bn0] + list(bb._blocks[:blocks])
    n = 0
    for m in mods:
        for p in m.parameters():
            p.requires_grad_(False)
            n += p.numel()
        m.eval()
        m.train = lambda mode=True, _m=m: _m  # stay in eval mode when model.train() is called
    return n


def param_groups(model, cfg) -> List[Dict[str, Any]]:
    """Trainable parameters; the fine windows' log-temperatures get their own group.

    Adam moves a scalar by about ``lr`` per step whatever its gradient, so at lr 5e-4 a
    log-temperature needs thousands of steps to change the window softmax's sharpness by e;
    ``train.temperature_lr_mult`` (no weight decay) lets it follow the features.
    """
    temps, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (temps if name.endswith("log_scale") else rest).append(p)
    mult = float(cfg["train"].get("temperature_lr_mult", 1.0))
    if not temps or mult == 1.0:  # one group in model order: states saved before the split resume
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]
    return [{"params": rest}, {"params": temps, "weight_decay": 0.0, "lr_mult": mult}]


def lr_at(progress: float, step: int, cfg) -> float:
    warm = cfg["train"]["warmup_steps"]
    base = cfg["train"]["lr"]
    if step < warm:
        return base * (step + 1) / warm
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(REPO / "training/configs/tiny.yaml"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--device", default=None)
    ap.add_argument("--max-minutes", type=float, default=None, help="time budget; the LR schedule follows it")
    ap.add_argument("--time-cap-minutes", type=float, default=None,
                    help="stop a step-scheduled run after this long (the schedule still follows steps)")
    ap.add_argument("--set", action="append", default=[], help="config override key=value")
    ap.add_argument("--no-resume", action="store_true")
    ap.add_argument("--init", default=None, help="start from these weights (a checkpoint, e.g. the shipped "
                    "model, or a training state) instead of the ImageNet backbone: fine-tuning")
    ap.add_argument("--ablation", choices=["full", "no_kd", "no_v2i", "no_cefg"], default="full")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--save-rank-weights", action="store_true",
                    help="every rank writes OUT/rank<R>.pt at the end (checks DDP replicas agree)")
    args = ap.parse_args(argv)

    cfg = load_config(args.config, args.set)
    if args.ablation == "no_kd":
        cfg["loss"]["kd"] = 0.0
    elif args.ablation == "no_v2i":
        cfg["data"]["p_pseudo_ir"] = 0.0
    elif args.ablation == "no_cefg":
        cfg["model"]["cefg_inject"] = False
        cfg["loss"]["modality"] = 0.0
    if args.threads:
        torch.set_num_threads(args.threads)
    world, rank, device = setup_distributed(args.device)
    seed = int(cfg["seed"])
    torch.manual_seed(seed)  # identical initial weights on every rank
    random.seed(seed)
    np.random.seed(seed)
    out_dir = Path(args.out)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(cfg, indent=1))
    log_f = open(out_dir / "train.log", "a") if rank == 0 else None

    def log(msg: str) -> None:
        if log_f:
            line = f"[{time.strftime('%H:%M:%S')}] {msg}"
            print(line, flush=True)
            log_f.write(line + "\n")
            log_f.flush()

    model_cfg = dict(cfg["model"])
    preset = model_cfg.pop("preset", "tiny")
    model = build_model(preset, **model_cfg).to(device)
    out_hw = (model.config["input_size"][1], model.config["input_size"][0])
    log(f"model {preset}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, ImageNet "
        f"backbone {'loaded' if model.texture.pretrained_loaded else 'NOT loaded (random init)'}, device {device}")
    data_root = Path(args.data_root)
    source = PairSource(cfg, data_root, device, seed + 1000 * rank, out_hw,
                        use_pseudo_ir=cfg["data"]["p_pseudo_ir"] > 0)

    w = cfg["loss"]
    teacher, kd_fn = None, None
    if cfg["loss"]["kd"] > 0:
        from training.teachers import load_teacher
        teacher = load_teacher(cfg["teacher"]["name"], path=cfg["teacher"].get("path")).to(device).eval()
        if teacher.channels != model.config["teacher_dim"]:
            raise SystemExit(f"teacher {cfg['teacher']['name']} has {teacher.channels} channels but "
                             f"model.teacher_dim is {model.config['teacher_dim']}")
        kd_fn = KDLoss(a=w["kd_mse"], b=w["kd_gram"], c=w["kd_kl"])

    if args.init and not (out_dir / "last.pt").exists():
        init_sd = read_state_dict(Path(args.init))
        own = model.state_dict()
        same = {k: v.to(own[k].dtype) for k, v in init_sd.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(same, strict=False)
        skipped = sorted(set(own) - set(same))
        log(f"initialised from {args.init}; kept the new initialisation of {len(skipped)} tensors "
            f"{skipped[:4]} (a projection head for another teacher width, a changed layer)")
    frozen = freeze_early_backbone(model, int(cfg["train"].get("freeze_backbone_blocks", 0)))
    if frozen:
        log(f"froze the ImageNet stem and backbone blocks < {cfg['train']['freeze_backbone_blocks']} "
            f"({frozen / 1e3:.0f} k parameters): the high-resolution part dominates CPU backward time")
    opt = torch.optim.AdamW(param_groups(model, cfg), lr=cfg["train"]["lr"], weight_decay=cfg["train"]["weight_decay"])
    step, elapsed_before, best = 0, 0.0, -1.0
    last_path = out_dir / "last.pt"
    if last_path.exists() and not args.no_resume:
        state = torch.load(last_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, elapsed_before, best = int(state["step"]), float(state["elapsed"]), float(state["best"])
        source.gen.set_state(state["gen_state"].cpu())
        source.cpu_gen.set_state(state["cpu_gen_state"])
        log(f"resumed from {last_path} at step {step}")
    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)

    writer = None
    if rank == 0:
        try:
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(str(out_dir / "tb"))
        except Exception as exc:  # noqa: BLE001 - tensorboard is an optional extra
            log(f"TensorBoard disabled ({exc})")

    total_steps = int(cfg["train"]["steps"])
    budget_s = args.max_minutes * 60 if args.max_minutes else None
    amp = device.type == "cuda"
    bs = int(cfg["train"]["batch_size"])
    t_start = time.time()
    last_ckpt = time.time()

    def save_state():
        if rank != 0:
            return
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                    "elapsed": elapsed_before + time.time() - t_start, "best": best,
                    "gen_state": source.gen.get_state(), "cpu_gen_state": source.cpu_gen.get_state(),
                    "config": cfg}, out_dir / "last.tmp")
        os.replace(out_dir / "last.tmp", last_path)

    def run_validation():
        nonlocal best
        if rank != 0:
            return
        metrics = validate(model, cfg, data_root, device, cfg["data"]["val_limit"])
        model.train()
        sc = score_of(metrics)
        log(f"val step {step}: " + " ".join(f"{k}={v:.3f}" for k, v in metrics.items()) + f" score={sc:.3f}")
        if writer:
            for k, v in metrics.items():
                writer.add_scalar(f"val/{k}", v, step)
        if sc > best:
            best = sc
            card = {"name": "distillmatch_tiny" if preset == "tiny" else f"distillmatch_{preset}",
                    "step": step, "val": metrics, "teacher": cfg["teacher"]["name"] if teacher else None,
                    "ablation": args.ablation, "train_config": cfg,
                    "train_seconds": elapsed_before + time.time() - t_start, "device": str(device)}
            save_checkpoint(out_dir / "best.pt", model, card, half=True)
            log(f"new best {sc:.3f} -> {out_dir / 'best.pt'}")

    try:
        from tqdm import tqdm
        bar = tqdm(total=None if budget_s else total_steps, initial=step, disable=rank != 0, dynamic_ncols=True)
    except ImportError:
        bar = None
    model.train()
    while True:
        elapsed = elapsed_before + time.time() - t_start
        progress = elapsed / budget_s if budget_s else step / total_steps
        if progress >= 1.0:
            break
        if args.time_cap_minutes and elapsed > args.time_cap_minutes * 60:
            log(f"time cap reached at step {step} of {total_steps}")
            break
        lr = lr_at(progress, step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr * g.get("lr_mult", 1.0)
        batch = source.batch(bs)
        total, losses, fine_err = compute_losses(ddp_model, model.config, batch, cfg, teacher, kd_fn, amp,
                                                 device.type)
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["train"]["grad_clip"])
        opt.step()
        step += 1
        if bar is not None:
            bar.update(1)
        if rank == 0 and step % 25 == 0:
            msg = " ".join(f"{k}={v.item():.4f}" for k, v in losses.items())
            log(f"step {step} lr={lr:.2e} loss={total.item():.4f} {msg} fine_err_px={fine_err.item():.2f}")
            if writer:
                writer.add_scalar("train/loss", total.item(), step)
                writer.add_scalar("train/fine_err_px", fine_err.item(), step)
                for k, v in losses.items():
                    writer.add_scalar(f"train/{k}", v.item(), step)
        if step % int(cfg["train"]["val_every"]) == 0:
            run_validation()
            if writer:
                log_example(writer, model, batch, step)
        if time.time() - last_ckpt > cfg["train"]["ckpt_minutes"] * 60:
            save_state()
            last_ckpt = time.time()
    if bar is not None:
        bar.close()
    run_validation()
    save_state()
    if args.save_rank_weights:
        torch.save(model.state_dict(), out_dir / f"rank{rank}.pt")
    log(f"done: {step} steps, best score {best:.3f}")
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0


def log_example(writer, model, batch, step: int) -> None:
    """One predicted match image of the current batch in TensorBoard."""
    from distillmatch_ros.fusion import draw_matches
    from distillmatch_ros.result import MatchResult
    model.eval()
    with torch.no_grad():
        out = model(batch["visible"][:1].float(), batch["thermal"][:1].float())
    model.train()
    keep = out["valid"][0].cpu().numpy()
    res = MatchResult(out["visible_points"][0].float().cpu().numpy()[keep],
                      out["thermal_points"][0].float().cpu().numpy()[keep],
                      out["scores"][0].float().cpu().numpy()[keep])
    vis = (batch["visible"][0, 0].float().cpu().numpy() * 255).astype(np.uint8)
    th = (batch["thermal"][0, 0].float().cpu().numpy() * 255).astype(np.uint8)
    img = draw_matches(vis, th, res)
    writer.add_image("matches", img[..., ::-1].copy(), step, dataformats="HWC")


if __name__ == "__main__":
    raise SystemExit(main())
