"""Export a checkpoint to ONNX (any machine) and to a TensorRT engine (CUDA + torch-tensorrt).

    python -m training.export runs/tiny/best.pt --onnx out/tiny.onnx [--size 640x512]
    python -m training.export runs/tiny/best.pt --tensorrt out/          # on a GPU machine
    python -m training.export runs/tiny/last.pt --checkpoint models/distillmatch_tiny.pt --card card.json
    python -m training.export runs/fine/best.pt --trunk-from runs/coarse/best.pt --checkpoint out.pt

Accepts an inference checkpoint (``best.pt``) or a training state (``last.pt``: weights, optimizer,
config). Every ONNX export is checked against PyTorch on a random textured pair before it is kept.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from distillmatch_ros.backends import export_onnx
from distillmatch_ros.checkpoint import load_checkpoint, save_checkpoint
from distillmatch_ros.errors import CheckpointError
from distillmatch_ros.model import ExportWrapper, build_model, with_input_size


def load_any(path: Path):
    """(model, card) from an inference checkpoint or a train_matcher training state."""
    try:
        return load_checkpoint(path)
    except CheckpointError:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if not (isinstance(obj, dict) and "model" in obj and "config" in obj):
            raise
        mcfg = dict(obj["config"]["model"])
        preset = mcfg.pop("preset", "tiny")
        model = build_model(preset, pretrained_backbone=False, **{k: v for k, v in mcfg.items()
                                                                   if k != "pretrained_backbone"})
        model.load_state_dict(obj["model"])
        return model.eval(), {"train_config": obj["config"], "step": obj.get("step")}


FROZEN_TAPS = ("texture.backbone._conv_stem.", "texture.backbone._bn0.", "texture.backbone._blocks.0.",
               "texture.backbone._blocks.1.", "texture.backbone._blocks.2.")


def compose_trunk(model, trunk_path: Path) -> int:
    """Take every tensor but the cross-modal fine stage from another checkpoint.

    The "cross" fine stage reads only the frozen ImageNet backbone taps (stem and blocks 0-2),
    so a fine stage trained by ``train_fine`` composes with a coarse level trained further by
    ``train_matcher`` (``freeze_backbone_blocks >= 3``), provided those taps are identical.
    Returns the number of tensors taken.
    """
    if model.cross_fine is None:
        raise SystemExit("--trunk-from needs a checkpoint with fine_stage='cross'")
    other, _ = load_any(trunk_path)
    theirs, own = other.state_dict(), model.state_dict()
    for k, v in own.items():
        if k.startswith(FROZEN_TAPS) and not torch.allclose(v.float(), theirs[k].float(), atol=1e-3):
            raise SystemExit(f"--trunk-from {trunk_path}: backbone tap {k} differs; the fine stage was "
                             "trained on other features (train the coarse level with freeze_backbone_blocks>=3)")
    take = {k: theirs[k].to(v.dtype) for k, v in own.items() if not k.startswith("cross_fine.") and k in theirs
            and theirs[k].shape == v.shape}
    missing = [k for k in own if not k.startswith("cross_fine.") and k not in take]
    if missing:
        raise SystemExit(f"--trunk-from {trunk_path}: no matching tensors for {missing[:4]}")
    model.load_state_dict(take, strict=False)
    return len(take)


def check_onnx(model, onnx_path: Path, tol: float = 0.05) -> float:
    """Max coordinate difference between ONNX Runtime and PyTorch on the same random pair."""
    import onnxruntime as ort
    w, h = model.config["input_size"]
    g = torch.Generator().manual_seed(0)
    base = torch.rand(2, 1, h // 8, w // 8, generator=g)
    pair = torch.nn.functional.interpolate(base, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
    vis, th = pair[:1].contiguous(), pair[1:].contiguous()
    with torch.inference_mode():
        ref = [o.numpy() for o in ExportWrapper(model)(vis, th)]
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"visible": vis.numpy(), "thermal": th.numpy()})
    valid = ref[3].astype(bool) & got[3].astype(bool)
    if valid.sum() == 0:
        return 0.0
    diff = float(max(np.abs(ref[0] - got[0])[valid].max(), np.abs(ref[1] - got[1])[valid].max()))
    if diff > tol:
        raise RuntimeError(f"ONNX export of {onnx_path} differs from PyTorch by {diff:.3f} px")
    return diff


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--onnx", default=None, help="write an ONNX file here")
    ap.add_argument("--size", default=None, help="working size WxH of the exported graph (default: the model's)")
    ap.add_argument("--tensorrt", default=None, help="build a TensorRT engine into this cache folder")
    ap.add_argument("--checkpoint", dest="out_ckpt", default=None, help="write a compact fp16 inference checkpoint")
    ap.add_argument("--card", default=None, help="JSON model card merged into --checkpoint's card")
    ap.add_argument("--trunk-from", default=None,
                    help="take everything but the cross-modal fine stage from this checkpoint (see compose_trunk)")
    ap.add_argument("--match-threshold", type=float, default=None,
                    help="default confidence threshold stored in the checkpoint's config")
    a = ap.parse_args(argv)
    size = tuple(int(v) for v in a.size.lower().split("x")) if a.size else None
    model, card = load_any(Path(a.checkpoint))
    if a.trunk_from:
        n = compose_trunk(model, Path(a.trunk_from))
        card["trunk_from"] = str(a.trunk_from)
        print(f"took {n} tensors from {a.trunk_from}")
    model = with_input_size(model, size)
    if a.match_threshold is not None:
        model.config["match_threshold"] = a.match_threshold
    model.match_threshold = 0.0
    if a.onnx:
        path = export_onnx(model, Path(a.onnx), tuple(model.config["input_size"]))
        print(f"wrote {path}; ONNX Runtime vs PyTorch max difference {check_onnx(model, path):.4f} px")
    if a.tensorrt:
        import os

        from distillmatch_ros.backends import TensorRTBackend
        os.environ["DISTILLMATCH_CACHE"] = a.tensorrt
        be = TensorRTBackend(model, "cuda", tuple(model.config["input_size"]))
        print(f"wrote TensorRT engine {be.engine_path}")
    if a.out_ckpt:
        if a.card:
            card.update(json.loads(Path(a.card).read_text()))
        save_checkpoint(a.out_ckpt, model, card, half=True)
        print(f"wrote {a.out_ckpt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
