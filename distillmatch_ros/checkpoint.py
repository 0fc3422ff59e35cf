"""Checkpoint files: weights + architecture config + model card, loaded with ``weights_only=True``.

A checkpoint is a plain dict ``{"format": FORMAT, "config": {...}, "card": {...},
"state_dict": {...}}`` so it can be read without unpickling code. Every way a file can be
unusable (missing, truncated, not a checkpoint, wrong architecture) ends in one
:class:`CheckpointError` naming the file and the problem.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import torch

from .errors import CheckpointError
from .model import DistillMatch, build_model

FORMAT = "distillmatch-checkpoint-v1"
PathLike = Union[str, os.PathLike]


def save_checkpoint(path: PathLike, model: DistillMatch, card: Dict[str, Any] | None = None,
                    half: bool = False) -> Path:
    """Write a checkpoint; ``half`` stores float weights as fp16 (half the size, same matches)."""
    sd = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone()
          for k, v in model.state_dict().items()}
    cfg = dict(model.config, pretrained_backbone=False)  # weights are in the file already
    obj = {"format": FORMAT, "config": cfg, "card": dict(card or {}), "state_dict": sd}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # never leave a half-written checkpoint under the real name
    return path


def read_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Load and validate the checkpoint dict without building a model."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model file not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"model path is a directory, not a checkpoint file: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, EOFError, RuntimeError, ValueError, OSError) as exc:
        raise CheckpointError(f"cannot read model file {path}: corrupt or truncated ({exc})") from exc
    except Exception as exc:  # unpickling rejected by weights_only, or an unknown format
        raise CheckpointError(f"cannot read model file {path}: not a safe DistillMatch checkpoint "
                              f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a DistillMatch checkpoint (expected format {FORMAT!r})")
    for key in ("config", "state_dict"):
        if not isinstance(obj.get(key), dict):
            raise CheckpointError(f"{path} has no {key!r} section")
    return obj


def load_checkpoint(path: PathLike) -> Tuple[DistillMatch, Dict[str, Any]]:
    """Build the model described by a checkpoint and load its weights (float32, eval mode)."""
    obj = read_checkpoint(path)
    try:
        model = build_model(dict(obj["config"], pretrained_backbone=False))
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: invalid architecture config ({exc})") from exc
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in obj["state_dict"].items()}
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise CheckpointError(f"{path}: weights do not match the architecture in its config: "
                              f"{' '.join(first)}") from exc
    return model.eval(), dict(obj.get("card", {}))
