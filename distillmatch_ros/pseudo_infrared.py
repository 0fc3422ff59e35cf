"""Visible -> pseudo-infrared translation with the shipped V2I-GAN generator.

Why here (runtime package, not ``training/``): matcher training uses it as augmentation and users
may call it on their own visible images, so it must load without the training tools.

Usage::

    from distillmatch_ros.pseudo_infrared import PseudoInfrared
    pir = PseudoInfrared.from_pretrained()          # the shipped v2i_gan, wherever it is installed
    ir = pir(bgr_uint8_hxwx3)                       # -> uint8 HxW pseudo-infrared
    pir.set_profile(thermal_profile(my_thermal_frames))  # render with your thermal camera's look
    ir01 = pir.translate_tensor(vis_bgr01)          # [B,3,H,W] 0..1 -> [B,1,H,W] 0..1 (differentiable-free)

The file is a plain dict loaded with ``torch.load(weights_only=True)``:
``{"format": "distillmatch_ros.v2i_gan", "version": 1, "config": {...}, "state_dict": {...},
"card": {...}, "profiles": {name: [mean, std]}}`` (profiles: only for standardised generators).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import model_files
from .errors import CheckpointError, InputError

FORMAT = "distillmatch_ros.v2i_gan"


class _ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.c1 = nn.Conv2d(c, c, 3, padding=1, padding_mode="reflect")
        self.c2 = nn.Conv2d(c, c, 3, padding=1, padding_mode="reflect")

    def forward(self, x):
        return x + self.c2(F.leaky_relu(self.c1(x), 0.2))


def stretch_exposure(x: torch.Tensor, lo_q: float = 0.01, hi_q: float = 0.99) -> torch.Tensor:
    """Map each image's 1-99 % luminance range to 0..1 (all channels by the same gain and offset).

    Why: a generator that sees raw visible brightness learns to guess the infrared brightness from
    the exposure, and at night (or on a camera with other auto-exposure) it guesses wrong. After
    the stretch a dark night frame and a bright day frame of the same structure look alike, so the
    output depends on what is in the scene, not on how the camera exposed it. The percentiles are
    taken on a 64x64 average-pooled copy (cheap, and insensitive to a few hot pixels).
    """
    if x.shape[1] == 3:  # BGR, BT.601 weights
        lum = (x * x.new_tensor((0.114, 0.587, 0.299)).view(1, 3, 1, 1)).sum(1, keepdim=True)
    else:
        lum = x.mean(1, keepdim=True)
    small = F.adaptive_avg_pool2d(lum, (min(64, x.shape[-2]), min(64, x.shape[-1]))).flatten(1)
    q = torch.quantile(small, small.new_tensor([lo_q, hi_q]), dim=1)  # [2, B]
    lo = q[0].view(-1, 1, 1, 1)
    span = (q[1] - q[0]).clamp_min(0.02).view(-1, 1, 1, 1)  # a flat frame is not blown up to noise
    return ((x - lo) / span).clamp(0, 1)


def standardise(x: torch.Tensor, min_std: float = 0.02) -> torch.Tensor:
    """Each image (and channel) to zero mean and unit standard deviation over its pixels."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True).clamp_min(min_std)  # a flat frame stays flat
    return (x - mean) / std


def render(z: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Standardised pseudo-infrared -> grey levels 0..1 of a thermal camera whose frames have this
    typical ``mean`` and ``std`` (its automatic gain control's look)."""
    return (mean + std * z).clamp(0, 1)


def thermal_profile(images) -> tuple:
    """(mean, std) in 0..1 of a thermal camera from some of its frames (uint8 or uint16 arrays):
    the average of the per-frame means and of the per-frame standard deviations."""
    means, stds = [], []
    for img in images:
        a = np.asarray(img, dtype=np.float64)
        a = a / (65535.0 if np.asarray(img).dtype == np.uint16 else 255.0)
        means.append(a.mean())
        stds.append(a.std())
    if not means:
        raise InputError("thermal_profile needs at least one thermal frame")
    return float(np.mean(means)), float(np.mean(stds))


class TranslationGenerator(nn.Module):
    """Small U-Net/ResNet image translator (~0.7 M parameters at width 24).

    Why this shape: residual blocks at 1/8 give the context thermal appearance needs (sky is
    cold, road is warm), additive skips at 1/2 and 1/4 keep edges where they are, and no
    normalisation layer keeps absolute intensity (instance norm would wash out how hot a
    region is). Output is a sigmoid in 0..1. Input side lengths must be multiples of 8
    (``PseudoInfrared`` pads).
    """

    default_conf = {
        "in_ch": 3,       # BGR visible for V->I, 1 for I->V
        "out_ch": 1,      # 1 for pseudo-infrared, 3 for pseudo-visible
        "width": 24,      # channels at full resolution (x2 at 1/2, x4 at 1/4 and 1/8)
        "n_res": 4,       # residual blocks at 1/8
        "input_norm": "none",  # "percentile": stretch the input's 1-99 % luminance to 0..1 first
        "output_norm": "none",  # "standardised": trained on standardised targets; rendered with a profile
    }

    def __init__(self, **conf):
        super().__init__()
        self.conf = {**self.default_conf, **conf}
        c, ci, co = self.conf["width"], self.conf["in_ch"], self.conf["out_ch"]
        act = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        self.stem = nn.Sequential(nn.Conv2d(ci, c, 3, padding=1, padding_mode="reflect"), act())
        self.d1 = nn.Sequential(nn.Conv2d(c, 2 * c, 3, 2, 1), act())
        self.d2 = nn.Sequential(nn.Conv2d(2 * c, 4 * c, 3, 2, 1), act())
        self.d3 = nn.Sequential(nn.Conv2d(4 * c, 4 * c, 3, 2, 1), act())
        self.res = nn.Sequential(*[_ResBlock(4 * c) for _ in range(self.conf["n_res"])])
        self.u3 = nn.Conv2d(4 * c, 4 * c, 3, padding=1, padding_mode="reflect")
        self.u2 = nn.Conv2d(4 * c, 2 * c, 3, padding=1, padding_mode="reflect")
        self.u1 = nn.Conv2d(2 * c, c, 3, padding=1, padding_mode="reflect")
        self.head = nn.Conv2d(c, co, 3, padding=1, padding_mode="reflect")

    @staticmethod
    def _up(x, skip):
        return F.leaky_relu(F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False) + skip, 0.2)

    def forward(self, x):
        if self.conf.get("input_norm", "none") == "percentile":
            x = stretch_exposure(x)
        s0 = self.stem(x)
        s1 = self.d1(s0)
        s2 = self.d2(s1)
        y = self.res(self.d3(s2))
        y = self._up(self.u3(y), s2)
        y = self._up(self.u2(y), s1)
        y = self._up(self.u1(y), s0)
        return torch.sigmoid(self.head(y))


class PseudoInfrared:
    """Callable visible (BGR uint8) -> pseudo-infrared (uint8) translator."""

    def __init__(self, generator: TranslationGenerator, card: Optional[dict] = None, device=None,
                 profiles: Optional[dict] = None, profile=None):
        self.device = torch.device(device or "cpu")
        self.generator = generator.to(self.device).eval()
        for p in self.generator.parameters():
            p.requires_grad_(False)
        self.card = dict(card or {})
        self.profiles = {k: (float(v[0]), float(v[1])) for k, v in (profiles or {}).items()}
        self.profile = None
        self.set_profile(profile)

    @property
    def standardised(self) -> bool:
        return self.generator.conf.get("output_norm", "none") == "standardised"

    def set_profile(self, profile=None) -> None:
        """Choose the thermal camera look a standardised generator renders to: a name from the
        file's ``profiles`` (the training cameras), a ``(mean, std)`` pair in 0..1 (see
        :func:`thermal_profile` for your own camera), or None for the file's ``default``.

        Why: how bright a thermal frame is depends on its camera's gain control, not on the
        scene, so it cannot be read from the visible image; the generator predicts the scene's
        relative heat, and the profile gives it the grey levels of the camera it stands in for.
        """
        if not self.standardised:
            if profile is not None:
                raise InputError("this V2I-GAN file renders one fixed look; it takes no thermal profile")
            return
        if profile is None:
            profile = "default"
        if isinstance(profile, str):
            if profile not in self.profiles:
                raise InputError(f"unknown thermal profile {profile!r}; this file has {sorted(self.profiles)} "
                                 "or pass (mean, std) in 0..1")
            profile = self.profiles[profile]
        mean, std = (float(v) for v in profile)
        if not (0.0 <= mean <= 1.0 and 0.0 < std <= 1.0):
            raise InputError(f"thermal profile needs mean in [0, 1] and std in (0, 1], got ({mean}, {std})")
        self.profile = (mean, std)

    @classmethod
    def from_pretrained(cls, path=None, device=None, profile=None) -> "PseudoInfrared":
        """Load a generator by shipped name or file path (default: the shipped ``v2i_gan``).

        The file is found by :func:`distillmatch_ros.model_files.resolve` (checkout, wheel,
        colcon install, ``$DISTILLMATCH_MODEL_DIR``); CheckpointError if missing or unusable.
        """
        try:
            path = model_files.resolve(path, model_files.V2I_GAN)
        except CheckpointError as e:
            raise CheckpointError(f"V2I-GAN generator: {str(e).rstrip('.')}. Train one with "
                                  "`python -m training.train_v2i_gan` (see docs/TRAINING.md).") from None
        try:
            blob = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # truncated / not a torch file / unsafe pickle
            raise CheckpointError(f"cannot read V2I-GAN file {path}: {e}") from e
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not a V2I-GAN generator file (expected format {FORMAT!r})")
        gen = TranslationGenerator(**blob.get("config", {}))
        try:
            gen.load_state_dict(blob["state_dict"])
        except Exception as e:
            raise CheckpointError(f"{path}: weights do not match the generator architecture: {e}") from e
        return cls(gen, blob.get("card"), device, profiles=blob.get("profiles"), profile=profile)

    @torch.no_grad()
    def translate_tensor(self, vis_bgr01: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] BGR in 0..1 (any H, W; gray [B,1,H,W] is replicated) -> [B,1,H,W] in 0..1."""
        if vis_bgr01.ndim != 4 or vis_bgr01.shape[1] not in (1, 3):
            raise InputError(f"expected [B,3,H,W] or [B,1,H,W], got {tuple(vis_bgr01.shape)}")
        x = vis_bgr01.to(self.device, torch.float32)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        h, w = x.shape[-2:]
        ph, pw = (-h) % 8, (-w) % 8
        if ph or pw:
            mode = "reflect" if min(h, w) > max(ph, pw) else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        y = self.generator(x)[..., :h, :w]
        if self.standardised:
            y = render(standardise(y), *self.profile)
        return y.to(vis_bgr01.device)

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        """BGR uint8 HxWx3 (or gray HxW) -> pseudo-infrared uint8 HxW."""
        if not isinstance(bgr, np.ndarray):
            raise InputError(f"expected a numpy image, got {type(bgr).__name__}")
        if bgr.dtype != np.uint8:
            raise InputError(f"expected a uint8 image, got dtype {bgr.dtype}")
        if not (bgr.ndim == 2 or (bgr.ndim == 3 and bgr.shape[2] in (1, 3))):
            raise InputError(f"expected HxWx3 BGR or HxW gray, got shape {bgr.shape}")
        if bgr.shape[0] < 8 or bgr.shape[1] < 8:
            raise InputError(f"image too small ({bgr.shape[1]}x{bgr.shape[0]}), need at least 8x8")
        t = torch.from_numpy(np.ascontiguousarray(bgr)).float().div_(255.0)
        t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
        y = self.translate_tensor(t)[0, 0]
        return (y.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
