"""Architecture presets. A checkpoint stores its full config, so a preset only seeds new models.

``tiny`` targets real time on a Jetson / a few CPU cores; ``base`` is sized like the paper's
model (LoFTR-class widths). Every key is commented where it is defined.
"""
from __future__ import annotations

import copy
from typing import Any, Dict

TINY: Dict[str, Any] = {
    "preset": "tiny",
    "input_size": [320, 256],     # (W, H) the network runs at; exported graphs are fixed to it
    "pretrained_backbone": True,  # EfficientNet-Lite0 ImageNet weights for the texture CNN
    "dims": [32, 64, 128],        # texture channels at 1/2, 1/4, 1/8
    "semantic_dim": 96,           # student encoder width at 1/8
    "teacher_dim": 384,           # projection head output (teacher width; training only)
    "modality_dim": 64,           # CEFG category representation size
    "cefg_layers": 1,             # per-modality transformer blocks after cross-injection
    "cefg_inject": True,          # add each modality's category to the other's features (ablation: off)
    "coarse_layers": 4,           # self/cross attention layers (pairs = layers / 2)
    "heads": 4,
    "match_threshold": 0.2,       # dual-softmax confidence threshold
    "max_matches": 1024,          # K: static number of returned matches (validity-masked)
    "coarse_band": 0,             # >0: a cell matches only cells within this many cells of its own
                                  # position (guided passes: the pair is already nearly aligned); 0: all
    "fine_window_4": 5,           # window (cells) searched at 1/4
    "fine_window_2": 3,           # window (cells) searched at 1/2
    "temperature": 0.1,           # dual-softmax temperature
    "fine_correlation": "cosine", # "window" stage only: "cosine" or "centred" (window mean removed first)
    "fine_expectation": "local",  # "local": soft-argmax around each window's argmax; "soft": whole window (biased)
    "fine_stage": "window",       # "window": per-image features (shipped); "cross": windows attend
                                  # to each other (cross_fine.py)
    "cross_fine_dims": [32, 32],  # "cross" stage: fine feature / token width at 1/2 and 1/4
    "cross_fine_layers": 1,       # "cross" stage: attention layers per level (cross, optionally self first)
    "cross_fine_heads": 2,
    "cross_fine_self_attention": False,  # self attention inside each window before the cross (CPU cost)
    "cross_fine_vis_window": 3,   # visible window (cells) whose tokens the thermal window attends to
}

BASE: Dict[str, Any] = dict(TINY, **{
    "preset": "base",
    "input_size": [640, 512],
    "dims": [64, 128, 256],
    "semantic_dim": 192,
    "modality_dim": 128,
    "cefg_layers": 2,
    "coarse_layers": 8,
    "heads": 8,
    "max_matches": 2048,
})

PRESETS = {"tiny": TINY, "base": BASE}


def make_config(preset: str = "tiny", **overrides: Any) -> Dict[str, Any]:
    """A fresh config dict from a preset, with overrides checked against known keys."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    cfg = copy.deepcopy(PRESETS[preset])
    check_known_keys(cfg, overrides)
    cfg.update(overrides)
    check_config(cfg)
    return cfg


def check_known_keys(cfg: Dict[str, Any], changes: Dict[str, Any]) -> None:
    """A changed key the config does not have would be ignored silently: refuse it."""
    unknown = set(changes) - set(cfg)
    if unknown:
        raise ValueError(f"unknown model config keys: {sorted(unknown)}")


def check_config(cfg: Dict[str, Any]) -> None:
    if cfg["fine_correlation"] not in ("cosine", "centred"):
        raise ValueError(f"fine_correlation must be 'cosine' or 'centred', got {cfg['fine_correlation']!r}")
    if cfg["fine_expectation"] not in ("local", "soft"):
        raise ValueError(f"fine_expectation must be 'local' or 'soft', got {cfg['fine_expectation']!r}")
    if cfg["fine_stage"] not in ("cross", "window"):
        raise ValueError(f"fine_stage must be 'cross' or 'window', got {cfg['fine_stage']!r}")


def complete_config(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Fill keys missing from an older checkpoint's config with its preset's defaults."""
    base = copy.deepcopy(PRESETS.get(cfg.get("preset", "tiny"), TINY))
    if "fine_stage" not in cfg:  # written before the cross-modal stage existed
        base["fine_stage"] = "window"
    if "fine_expectation" not in cfg:  # written before the local expectation existed
        base["fine_expectation"] = "soft"
    base.update(cfg)
    check_config(base)
    return base
