"""Distillation loss ``L_KD = a*MSE + b*Gram + c*KL`` and the modality cross-entropy (CEFG).

Why three terms (the DistillMatch paper names them; the exact forms are our choice):

* **MSE** (point-wise): each student feature vector matches the teacher's at the same place,
  after per-location standardisation over channels (teachers differ wildly in scale: ViT tokens
  vs ReLU6 CNN activations).
* **Gram** (relational): the cosine-similarity matrix between positions of one image
  (``N x N``) must match the teacher's; it transfers *which places look alike*, the property
  that makes foundation features modality robust, without forcing exact values.
* **KL** (distribution): channel-wise distillation (Shu et al., ICCV 2021): each channel's
  activation map is turned into a spatial distribution by a softmax with temperature ``tau`` and
  the student's must match the teacher's (``KL(teacher || student) * tau^2``).

The teacher map is resized (bilinear) to the student's grid: the student works at 1/8, ViT
teachers at 1/14 or 1/16. Usage::

    kd = KDLoss(a=1.0, b=1.0, c=0.5, tau=4.0)          # or KDLoss(**cfg["kd"])
    loss, terms = kd(student_proj, teacher_feats)        # [B,C,hs,ws], [B,C,ht,wt]; same C
    l_ce = modality_ce(logits_vis, logits_th, is_pseudo_ir)
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


def _standardise(f: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Zero mean, unit variance over channels at every location (a LayerNorm without affine)."""
    return (f - f.mean(1, keepdim=True)) / (f.var(1, keepdim=True, unbiased=False) + eps).sqrt()


class KDLoss(nn.Module):
    default_conf = {
        "a": 1.0,            # point-wise MSE weight
        "b": 1.0,            # Gram (relational) weight
        "c": 1.0,            # channel-distribution KL weight
        "tau": 4.0,          # softmax temperature of the KL term
        "max_tokens": 1024,  # positions sampled for the N x N Gram matrices (memory bound)
    }

    def __init__(self, **conf):
        super().__init__()
        unknown = set(conf) - set(self.default_conf)
        if unknown:
            raise KeyError(f"unknown KD options {sorted(unknown)}; known: {sorted(self.default_conf)}")
        self.conf = {**self.default_conf, **conf}

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, generator: Optional[torch.Generator] = None):
        """Return ``(total, {"mse", "gram", "kl"})``; the teacher is detached."""
        if student.ndim != 4 or teacher.ndim != 4 or student.shape[:2] != teacher.shape[:2]:
            raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} "
                             "must be [B,C,h,w] with the same B and C (project the student first)")
        c = self.conf
        t = teacher.detach().float()
        if t.shape[-2:] != student.shape[-2:]:
            t = F.interpolate(t, size=student.shape[-2:], mode="bilinear", align_corners=False)
        s = student.float()
        zero = s.sum() * 0.0
        terms = {"mse": zero, "gram": zero, "kl": zero}
        if c["a"]:
            terms["mse"] = F.mse_loss(_standardise(s), _standardise(t))
        if c["b"]:
            terms["gram"] = gram_loss(s, t, c["max_tokens"], generator)
        if c["c"]:
            terms["kl"] = channel_kl(s, t, c["tau"])
        total = c["a"] * terms["mse"] + c["b"] * terms["gram"] + c["c"] * terms["kl"]
        return total, terms


def gram_loss(s: torch.Tensor, t: torch.Tensor, max_tokens: int = 1024,
              generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """MSE between the position-by-position cosine-similarity matrices of student and teacher."""
    B, C, h, w = s.shape
    fs = F.normalize(s.flatten(2), dim=1)
    ft = F.normalize(t.flatten(2), dim=1)
    n = h * w
    if n > max_tokens:
        idx = torch.randperm(n, generator=generator)[:max_tokens].to(s.device)
        fs, ft = fs[..., idx], ft[..., idx]
    gs = fs.transpose(1, 2) @ fs
    gt = ft.transpose(1, 2) @ ft
    return F.mse_loss(gs, gt)


def channel_kl(s: torch.Tensor, t: torch.Tensor, tau: float = 4.0) -> torch.Tensor:
    """Channel-wise distillation: KL between per-channel spatial softmax maps, times tau^2."""
    B, C = s.shape[:2]
    ls = F.log_softmax(s.flatten(2) / tau, dim=-1)
    lt = F.log_softmax(t.flatten(2) / tau, dim=-1)
    kl = (lt.exp() * (lt - ls)).sum(-1)          # [B, C]
    return kl.mean() * tau ** 2


def modality_targets(batch: int, is_pseudo_ir: Optional[torch.Tensor] = None, device=None):
    """Class targets (0 = visible, 1 = infrared) for the visible and thermal sides of a batch.

    A visible image replaced by pseudo-infrared counts as infrared: the CEFG head must learn the
    *appearance* modality, which is what it injects into the other branch.
    """
    tv = torch.zeros(batch, dtype=torch.long, device=device)
    if is_pseudo_ir is not None:
        tv = is_pseudo_ir.to(device=device, dtype=torch.long)
    return tv, torch.ones(batch, dtype=torch.long, device=device)


def modality_ce(logits_vis: torch.Tensor, logits_th: torch.Tensor,
                is_pseudo_ir: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cross-entropy of the modality classifier on both sides; logits [B,2] (or [B] binary)."""
    tv, tt = modality_targets(logits_vis.shape[0], is_pseudo_ir, logits_vis.device)
    if logits_vis.ndim == 1:
        return 0.5 * (F.binary_cross_entropy_with_logits(logits_vis, tv.float())
                      + F.binary_cross_entropy_with_logits(logits_th, tt.float()))
    return 0.5 * (F.cross_entropy(logits_vis, tv) + F.cross_entropy(logits_th, tt))
