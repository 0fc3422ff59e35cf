"""V2I-GAN: visible -> pseudo-infrared translation (the DistillMatch paper's augmentation model).

Why: matcher training replaces the visible side of some pairs with pseudo-infrared, which widens
the data without touching the geometry (and so the ground truth).

Framework (PearlGAN-style, as the DistillMatch abstract describes; the exact weights are not
published, these are our choices):

* two generators ``G_vi`` (BGR -> IR) and ``G_iv`` (IR -> BGR), ``TranslationGenerator`` from
  ``distillmatch_ros.pseudo_infrared`` so the runtime loads exactly what was trained;
* two PatchGAN discriminators (70x70-style, 3 strided convs), LSGAN objective;
* cycle consistency (L1) both ways;
* structured gradient alignment (SGA): the output's edges must lie where, and be oriented as, the
  input's edges (polarity-free, since hot objects can be darker or brighter than in visible);
* SSIM and total variation terms;
* a paired L1 term (and SSIM to the paired target), because our pairs are aligned. PearlGAN is
  unpaired; with aligned pairs the paired terms dominate learning and the adversarial term adds
  texture.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from distillmatch_ros.pseudo_infrared import FORMAT, TranslationGenerator, standardise

BGR2GRAY = (0.114, 0.587, 0.299)


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] BGR -> [B,1,H,W] (BT.601 weights, OpenCV order); 1-channel passes through."""
    if x.shape[1] == 1:
        return x
    w = x.new_tensor(BGR2GRAY).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _gauss(win: int, sigma: float, device, dtype):
    r = torch.arange(win, device=device, dtype=dtype) - (win - 1) / 2
    g = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, win: int = 11, sigma: float = 1.5, reduce: bool = True):
    """SSIM of images in 0..1 (Gaussian 11x11, sigma 1.5, Wang et al. constants), valid region."""
    c = a.shape[1]
    g = _gauss(win, sigma, a.device, a.dtype)
    kx = g.view(1, 1, 1, win).repeat(c, 1, 1, 1)
    ky = g.view(1, 1, win, 1).repeat(c, 1, 1, 1)

    def blur(x):
        return F.conv2d(F.conv2d(x, kx, groups=c), ky, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    saa = blur(a * a) - mu_a ** 2
    sbb = blur(b * b) - mu_b ** 2
    sab = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    m = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
    return m.mean() if reduce else m.mean(dim=(1, 2, 3))


def _grad(x):
    gx = x[..., :, 1:] - x[..., :, :-1]
    gy = x[..., 1:, :] - x[..., :-1, :]
    return gx[..., :-1, :], gy[..., :, :-1]


def sga_loss(inp: torch.Tensor, out: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Structured gradient alignment: output edges weighted by strength must align with input edges.

    ``(1 - |cos(grad_in, grad_out)|)`` is 0 where the output's edge has the input edge's
    orientation (either polarity) and 1 where the input has no edge; weighting by the output's
    relative gradient magnitude penalises edges the output invents or moves.
    """
    ix, iy = _grad(to_gray(inp))
    ox, oy = _grad(to_gray(out))
    mag_i = torch.sqrt(ix ** 2 + iy ** 2 + eps ** 2)
    mag_o = torch.sqrt(ox ** 2 + oy ** 2 + eps ** 2)
    cos = (ix * ox + iy * oy).abs() / (mag_i * mag_o)
    w = mag_o / mag_o.mean(dim=(1, 2, 3), keepdim=True).clamp_min(eps)
    return (w * (1 - cos)).mean()


def tv_loss(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation (mean absolute neighbour difference)."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


class PatchDiscriminator(nn.Module):
    """PatchGAN: a grid of real/fake scores, each judging a ~40 px patch (LSGAN targets 1/0)."""

    def __init__(self, in_ch: int, width: int = 32):
        super().__init__()
        c = width
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, c, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(c, 2 * c, 4, 2, 1), nn.GroupNorm(4, 2 * c), nn.LeakyReLU(0.2, True),
            nn.Conv2d(2 * c, 4 * c, 4, 2, 1), nn.GroupNorm(4, 4 * c), nn.LeakyReLU(0.2, True),
            nn.Conv2d(4 * c, 1, 3, 1, 1))

    def forward(self, x):
        return self.net(x)


@dataclass
class GanConfig:
    """Architecture and loss weights (recorded in the shipped file's card)."""
    width: int = 24
    n_res: int = 4
    input_norm: str = "percentile"   # the V->I generator's input stretch (pseudo_infrared.stretch_exposure)
    output_norm: str = "standardised"  # compare standardised images: no loss rewards a brightness guess
    d_width: int = 32
    lr: float = 2e-4
    w_adv: float = 1.0
    w_cyc: float = 5.0
    w_pair: float = 10.0
    w_sga: float = 1.0
    w_ssim: float = 2.0
    w_tv: float = 0.2
    extra: dict = field(default_factory=dict)


class V2IGAN(nn.Module):
    """Both generators and discriminators, their optimisers, and one training step."""

    def __init__(self, cfg: Optional[GanConfig] = None):
        super().__init__()
        cfg = cfg if cfg is not None else GanConfig()  # a fresh one: GanConfig is mutable
        self.cfg = cfg
        self.g_vi = TranslationGenerator(in_ch=3, out_ch=1, width=cfg.width, n_res=cfg.n_res,
                                         input_norm=cfg.input_norm, output_norm=cfg.output_norm)
        self.g_iv = TranslationGenerator(in_ch=1, out_ch=3, width=cfg.width, n_res=cfg.n_res)
        self.d_i = PatchDiscriminator(1, cfg.d_width)
        self.d_v = PatchDiscriminator(3, cfg.d_width)
        g_params = list(self.g_vi.parameters()) + list(self.g_iv.parameters())
        d_params = list(self.d_i.parameters()) + list(self.d_v.parameters())
        self.opt_g = torch.optim.Adam(g_params, lr=cfg.lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(d_params, lr=cfg.lr, betas=(0.5, 0.999))

    def thermal_view(self, th: torch.Tensor) -> torch.Tensor:
        """What the infrared losses and D_i compare: the image itself, or (standardised
        generator) the image at a fixed mean 0.5 and std 0.2, so that no term can be lowered by
        guessing the target camera's brightness or contrast."""
        if self.cfg.output_norm != "standardised":
            return th
        return (0.5 + 0.2 * standardise(th)).clamp(0, 1)

    def generator_losses(self, vis, th):
        """All generator terms for a batch of aligned (vis BGR [B,3], th [B,1]) in 0..1."""
        c = self.cfg
        th = self.thermal_view(th)
        fake_i = self.thermal_view(self.g_vi(vis))
        fake_v = self.g_iv(th)
        rec_v = self.g_iv(fake_i)
        rec_i = self.thermal_view(self.g_vi(fake_v))
        p_i, p_v = self.d_i(fake_i), self.d_v(fake_v)
        terms = {
            "adv": F.mse_loss(p_i, torch.ones_like(p_i)) + F.mse_loss(p_v, torch.ones_like(p_v)),
            "cyc": F.l1_loss(rec_v, vis) + F.l1_loss(rec_i, th),
            "pair": F.l1_loss(fake_i, th) + F.l1_loss(fake_v, vis),
            "sga": sga_loss(vis, fake_i) + sga_loss(th, fake_v),
            "ssim": (1 - ssim(fake_i, th)) + (1 - ssim(to_gray(fake_v), to_gray(vis))),
            "tv": tv_loss(fake_i) + tv_loss(fake_v),
        }
        w = {"adv": c.w_adv, "cyc": c.w_cyc, "pair": c.w_pair, "sga": c.w_sga, "ssim": c.w_ssim, "tv": c.w_tv}
        total = sum(w[k] * v for k, v in terms.items())
        return total, terms, (fake_i.detach(), fake_v.detach())

    def step(self, vis, th) -> dict:
        """One alternating LSGAN step (generators, then discriminators); returns float losses."""
        for d in (self.d_i, self.d_v):
            d.requires_grad_(False)
        total, terms, (fake_i, fake_v) = self.generator_losses(vis, th)
        th = self.thermal_view(th)
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        self.opt_g.step()
        for d in (self.d_i, self.d_v):
            d.requires_grad_(True)
        d_loss = 0.0
        for d, real, fake in ((self.d_i, th, fake_i), (self.d_v, vis, fake_v)):
            pr, pf = d(real), d(fake)
            d_loss = d_loss + 0.5 * (F.mse_loss(pr, torch.ones_like(pr)) + F.mse_loss(pf, torch.zeros_like(pf)))
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        out = {k: float(v.detach()) for k, v in terms.items()}
        out.update(g_total=float(total.detach()), d=float(d_loss.detach()))
        return out

    def export_generator(self, card: dict, profiles: Optional[dict] = None) -> dict:
        """The shipped, weights_only-loadable dict (V->I generator only); ``profiles``: {camera:
        [mean, std]} of the training cameras' thermal frames, for a standardised generator."""
        sd = {k: v.detach().cpu().clone() for k, v in self.g_vi.state_dict().items()}
        blob = {"format": FORMAT, "version": 1, "config": dict(self.g_vi.conf), "state_dict": sd,
                "card": card, "train_config": asdict(self.cfg)}
        if self.cfg.output_norm == "standardised":
            blob["profiles"] = {k: [float(v[0]), float(v[1])] for k, v in (profiles or {}).items()}
        return blob
