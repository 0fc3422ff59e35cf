"""The DistillMatch student network: texture CNN + distilled semantic encoder, CEFG, STFA,
coarse matching, two-level fine matching and sub-pixel refinement (the DistillMatch method).

Inputs are gray images in [0, 1], [B,1,H,W], H and W multiples of 8; both images of a pair have
the same working size (the Matcher resizes each camera's image to it and maps points back).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import sine_position_encoding
from .cefg import CEFG
from .coarse import CoarseMatching
from .config import complete_config
from .cross_fine import CrossFine
from .fine import FineLevel, SubpixelRefiner
from .semantic import SemanticStudent
from .stfa import STFA
from .texture import TextureCNN


def cell_centres(idx: torch.Tensor, grid_w: int, stride: int = 8) -> torch.Tensor:
    """Pixel centre [...,2] of flat 1/8 cell indices (row-major over a grid of width grid_w)."""
    x = torch.remainder(idx, grid_w).to(torch.float32)
    y = torch.div(idx, grid_w, rounding_mode="floor").to(torch.float32)
    return torch.stack([x, y], dim=-1) * stride + (stride - 1) / 2.0


def inside(pts: torch.Tensor, size_wh: Tuple[int, int]) -> torch.Tensor:
    """Points clamped to the image (pixel centres at integers): a window read-out near the
    border can land past the last pixel, where no correspondence can be."""
    return torch.stack([pts[..., 0].clamp(-0.5, size_wh[0] - 0.5), pts[..., 1].clamp(-0.5, size_wh[1] - 0.5)], -1)


class DistillMatch(nn.Module):
    def __init__(self, config: Dict[str, Any]):
        super().__init__()
        self.config = cfg = complete_config(config)
        d2, d4, d8 = cfg["dims"]
        self.texture = TextureCNN(cfg["dims"], pretrained=cfg["pretrained_backbone"])
        self.semantic = SemanticStudent(cfg["semantic_dim"], cfg["teacher_dim"])
        self.cefg = CEFG(d4, cfg["semantic_dim"], d8, cfg["modality_dim"], cfg["cefg_layers"], cfg["heads"],
                         inject=bool(cfg["cefg_inject"]))
        self.stfa = STFA(cfg["semantic_dim"], d8, cfg["heads"])
        self.coarse = CoarseMatching(d8, cfg["coarse_layers"], cfg["heads"], cfg["temperature"],
                                     int(cfg["coarse_band"]))
        self.match_threshold = float(cfg["match_threshold"])
        self.max_matches = int(cfg["max_matches"])
        self.cross_fine = None
        if cfg["fine_stage"] == "cross":
            taps = self.texture.backbone.block_channels
            self.cross_fine = CrossFine(taps[0], taps[2], cfg)
            return
        # The "window" fine stage (the shipped one): per-image window correlation.
        # Coarse-to-fine feature injection (EfficientLoFTR-style): the fine levels receive the
        # transformed, cross-modal 1/8 features, so their window correlation is not left to raw
        # per-modality CNN features. Zero-initialised: a no-op until training moves it.
        self.coarse_to_fine4 = nn.Conv2d(d8, d4, 1)
        self.fine4_to_fine2 = nn.Conv2d(d4, d2, 1)
        for conv in (self.coarse_to_fine4, self.fine4_to_fine2):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        centred = cfg["fine_correlation"] == "centred"
        local = cfg["fine_expectation"] == "local"
        self.fine4 = FineLevel(d4, cfg["fine_window_4"], 4, centred, local)
        self.fine2 = FineLevel(d2, cfg["fine_window_2"], 2, centred, local)
        self.refine = SubpixelRefiner(d2, cfg["fine_window_2"], 2)

    def forward(self, visible: torch.Tensor, thermal: torch.Tensor,
                coarse_pairs: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                with_kd: bool = False) -> Dict[str, torch.Tensor]:
        """Match a batch of pairs.

        coarse_pairs: (idx_v [B,K], idx_t [B,K]) to refine given coarse matches instead of the
        predicted ones (training uses ground-truth cells so fine levels learn from the start).
        Returns visible_points/thermal_points [B,K,2] (working pixels), scores [B,K], valid [B,K],
        and the intermediate tensors the training losses need.
        """
        b, _, h, w = visible.shape
        size_wh = (w, h)
        x = torch.cat([visible, thermal], dim=0) * 2.0 - 1.0
        cross = self.cross_fine is not None
        taps = self.texture(x, with_taps=cross)
        f2, f4, f8 = taps[:3]
        s8 = self.semantic(x)
        f4v, f4t = f4.chunk(2)
        s8v, s8t = s8.chunk(2)
        f8v, f8t = f8.chunk(2)
        t8v, t8t, s8v, s8t, modality_logits = self.cefg(f4v, f4t, s8v, s8t, f8v, f8t)
        a8v, a8t = self.stfa(torch.cat([s8v, s8t]), torch.cat([t8v, t8t])).chunk(2)  # one batch, same maths
        gh, gw = a8v.shape[-2:]
        pe = sine_position_encoding(a8v.shape[1], gh, gw, device=a8v.device, dtype=a8v.dtype)
        cv = (a8v + pe).flatten(2).transpose(1, 2)
        ct = (a8t + pe).flatten(2).transpose(1, 2)
        cv, ct = self.coarse.transform(cv, ct)
        conf = None  # the confidence matrix is built only where a loss reads it (training)
        if coarse_pairs is None:
            idx_v, idx_t, scores, valid = self.coarse.match(cv, ct, self.match_threshold, self.max_matches, (gh, gw))
        else:
            conf = self.coarse.confidence(cv, ct)
            idx_v, idx_t = coarse_pairs
            scores = torch.gather(conf.reshape(b, -1), 1, idx_v * conf.shape[2] + idx_t)
            valid = torch.ones_like(scores, dtype=torch.bool)
        pv = cell_centres(idx_v, gw)
        pt0 = cell_centres(idx_t, gw)
        if cross:
            (b2v, b2t), (b4v, b4t) = taps[3].chunk(2), taps[4].chunk(2)
            out = self.cross_fine(b2v, b2t, b4v, b4t, pv, pt0, size_wh)
        else:
            f2v, f2t = f2.chunk(2)
            f4v, f4t, f2v, f2t = self._inject_coarse(cv, ct, (gh, gw), f4v, f4t, f2v, f2t)
            logits4, pt1, _ = self.fine4(f4v, f4t, pv, pt0, size_wh)
            logits2, pt2, _ = self.fine2(f2v, f2t, pv, pt1, size_wh)
            pv_f, pt_f = self.refine(f2v, f2t, pv, pt2, logits2, size_wh)
            out = {"visible_points": pv_f, "thermal_points": pt_f, "fine4_logits": logits4, "fine4_thermal": pt1,
                   "fine2_logits": logits2, "fine2_thermal": pt2}
        out["visible_points"] = inside(out["visible_points"], size_wh)
        out["thermal_points"] = inside(out["thermal_points"], size_wh)
        out.update({"scores": scores, "valid": valid, "modality_logits": modality_logits,
                    "coarse_visible": pv, "coarse_thermal": pt0})
        if conf is not None:
            out["conf"] = conf
        if with_kd:
            out["student_features"] = self.semantic.project(s8)  # [2B, teacher_dim, h/8, w/8]
        return out

    def forward_fine(self, visible: torch.Tensor, thermal: torch.Tensor, pv: torch.Tensor,
                     pt0: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Only the cross-modal fine stage, from given coarse points [B,K,2] (working pixels).

        Fine-stage training uses it: the backbone taps are frozen ImageNet layers, so nothing
        but the fine stage has to run, and every step can supervise many matches.
        """
        if self.cross_fine is None:
            raise ValueError("forward_fine needs fine_stage='cross'")
        b, _, h, w = visible.shape
        with torch.no_grad():
            b2, b4 = self.texture.fine_taps(torch.cat([visible, thermal], dim=0) * 2.0 - 1.0)
        (b2v, b2t), (b4v, b4t) = b2.chunk(2), b4.chunk(2)
        out = self.cross_fine(b2v, b2t, b4v, b4t, pv, pt0, (w, h))
        out.update({"coarse_visible": pv, "coarse_thermal": pt0})
        return out

    def _inject_coarse(self, cv, ct, grid, f4v, f4t, f2v, f2t):
        """Both images as one batch (per-item maths, half the graph nodes)."""
        tokens = torch.cat([cv, ct])
        coarse = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], grid[0], grid[1])
        f4, f2 = torch.cat([f4v, f4t]), torch.cat([f2v, f2t])
        f4 = f4 + F.interpolate(self.coarse_to_fine4(coarse), size=f4.shape[-2:], mode="bilinear",
                                align_corners=False)
        f2 = f2 + F.interpolate(self.fine4_to_fine2(f4), size=f2.shape[-2:], mode="bilinear",
                                align_corners=False)
        (f4v, f4t), (f2v, f2t) = f4.chunk(2), f2.chunk(2)
        return f4v, f4t, f2v, f2t


class ExportWrapper(nn.Module):
    """Single-pair, fixed-size graph for ONNX/TensorRT: (vis, th) [1,1,H,W] -> 4 static tensors."""

    def __init__(self, model: DistillMatch):
        super().__init__()
        self.model = model

    def forward(self, visible: torch.Tensor, thermal: torch.Tensor):
        out = self.model(visible, thermal)
        return (out["visible_points"][0], out["thermal_points"][0], out["scores"][0],
                out["valid"][0].to(torch.uint8))
