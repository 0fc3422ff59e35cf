"""Matching losses: ground truth from a homography, coarse and fine focal losses, sub-pixel loss.

Ground truth is exact because training pairs are made by warping aligned pairs with a known
homography ``H_t2v`` (thermal pixel -> visible pixel, working resolution). Coarse positives are
mutual: the visible cell centre lands in the thermal cell *and* that cell's centre lands back in
the visible cell (LoFTR's rule), so dual-softmax never sees two positives in one row or column.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F

from distillmatch_ros.model.distillmatch import cell_centres


def apply_h(H: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """H [B,3,3], pts [B,P,2] -> [B,P,2] (projective)."""
    ph = torch.cat([pts, torch.ones_like(pts[..., :1])], dim=-1) @ H.transpose(1, 2)
    return ph[..., :2] / ph[..., 2:].clamp(min=1e-8)


def cell_of(p: torch.Tensor, gw: int, gh: int, stride: int = 8) -> Tuple[torch.Tensor, torch.Tensor]:
    cx = torch.floor((p[..., 0] + 0.5) / stride).long()
    cy = torch.floor((p[..., 1] + 0.5) / stride).long()
    inside = (cx >= 0) & (cx < gw) & (cy >= 0) & (cy < gh)
    return cy.clamp(0, gh - 1) * gw + cx.clamp(0, gw - 1), inside


def coarse_ground_truth(H_t2v: torch.Tensor, gh: int, gw: int) -> Dict[str, torch.Tensor]:
    """Mutual cell correspondences. Returns match_t [B,N] (thermal cell of each visible cell),
    positive [B,N] bool, and target thermal points [B,N,2] of the visible cell centres."""
    b = H_t2v.shape[0]
    n = gh * gw
    idx = torch.arange(n, device=H_t2v.device).unsqueeze(0).expand(b, n)
    cv = cell_centres(idx, gw)
    H_v2t = torch.linalg.inv(H_t2v)
    pt = apply_h(H_v2t, cv)
    j, inside_t = cell_of(pt, gw, gh)
    back = apply_h(H_t2v, cell_centres(j, gw))
    i_back, inside_v = cell_of(back, gw, gh)
    positive = inside_t & inside_v & (i_back == idx)
    return {"match_t": j, "positive": positive, "target_thermal": pt}


def focal_coarse_loss(conf: torch.Tensor, gt: Dict[str, torch.Tensor], alpha: float = 0.25,
                      gamma: float = 2.0) -> torch.Tensor:
    """LoFTR-style focal loss on the dual-softmax confidence matrix [B,N,M]."""
    conf = conf.clamp(1e-6, 1 - 1e-6)
    pos = gt["positive"]
    target = torch.zeros_like(conf, dtype=torch.bool)
    target.scatter_(2, gt["match_t"].unsqueeze(-1), pos.unsqueeze(-1))
    p_pos = conf[target]
    loss_pos = (-alpha * (1 - p_pos) ** gamma * p_pos.log()).mean() if p_pos.numel() else conf.sum() * 0
    p_neg = conf[~target]
    loss_neg = (-alpha * p_neg ** gamma * (1 - p_neg).log()).mean()
    return loss_pos + loss_neg


def sample_gt_pairs(gt: Dict[str, torch.Tensor], k: int, generator: torch.Generator | None = None):
    """Pick K positive (visible cell, thermal cell) pairs per item; items with fewer repeat them.

    Returns idx_v [B,K], idx_t [B,K], mask [B,K] (False where an item had no positive at all).
    """
    pos = gt["positive"].float()  # boolean, or non-negative sampling weights
    has_any = pos.sum(1) > 0
    weights = torch.where(has_any.unsqueeze(1), pos, torch.ones_like(pos))
    idx_v = torch.multinomial(weights, k, replacement=True, generator=generator)
    idx_t = torch.gather(gt["match_t"], 1, idx_v)
    return idx_v, idx_t, has_any.unsqueeze(1).expand_as(idx_v)


def _window_target(p_true: torch.Tensor, centre: torch.Tensor, window: int, stride: float):
    off = torch.round((p_true - centre) / stride + (window - 1) / 2).long()
    ok = (off >= 0).all(-1) & (off < window).all(-1)
    return off[..., 1].clamp(0, window - 1) * window + off[..., 0].clamp(0, window - 1), ok


def focal_ce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, gamma: float = 2.0):
    logp = torch.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
    loss = -((1 - logp.exp()) ** gamma) * logp
    m = mask.float()
    return (loss * m).sum() / m.sum().clamp(min=1)


def fine_losses(out: Dict[str, torch.Tensor], H_t2v: torch.Tensor, mask: torch.Tensor,
                windows=(5, 3)) -> Dict[str, torch.Tensor]:
    """Focal losses on the 1/4 and 1/2 windows and the sub-pixel loss, for given coarse pairs."""
    p_true = apply_h(torch.linalg.inv(H_t2v), out["coarse_visible"])  # exact thermal point
    t4, ok4 = _window_target(p_true, out["coarse_thermal"], windows[0], 4.0)
    loss4 = focal_ce(out["fine4_logits"], t4, mask & ok4)
    t2, ok2 = _window_target(p_true, out["fine4_thermal"].detach(), windows[1], 2.0)
    loss2 = focal_ce(out["fine2_logits"], t2, mask & ok2)
    # The window classifications above are at the window's stride; the soft-argmax positions
    # they feed forward also get a direct regression target (LoFTR's fine L2 term), so each
    # level's expectation is pulled to the exact point, not only its argmax cell.
    m = (mask & ok4).float()  # matches whose exact point lies in the 1/4 window
    reg = ((out["fine4_thermal"] - p_true).norm(dim=-1) / 4.0 + (out["fine2_thermal"] - p_true).norm(dim=-1) / 2.0)
    reg = (reg * m).sum() / m.sum().clamp(min=1)
    # Sub-pixel: the refined pair must be consistent with H (error measured in visible pixels).
    err = out["visible_points"] - apply_h(H_t2v, out["thermal_points"])
    sub = (F.smooth_l1_loss(err, torch.zeros_like(err), reduction="none", beta=1.0).sum(-1) * m).sum() \
        / m.sum().clamp(min=1)
    with torch.no_grad():
        px = (err.norm(dim=-1) * m).sum() / m.sum().clamp(min=1)
    return {"fine4": loss4, "fine2": loss2, "fine_reg": reg, "subpixel": sub, "fine_err_px": px}
