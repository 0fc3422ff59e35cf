"""Batched, device-resident synthesis of matcher training pairs from aligned visible/thermal pairs.

Why: aligned pairs (RoadScene, TNO, a calibrated rig) have identity ground truth; warping one side
with a sampled rig-like homography gives pairs with *exact dense* ground truth. Doing it with
``F.grid_sample`` on tensors already on the GPU means a GPU run needs no CPU data loader; the same
code runs on CPU.

API (everything on the device of ``vis``)::

    out = synth_batch(vis, th, out_hw=(256, 320), generator=g, pseudo_ir=None, p_pseudo_ir=0.3,
                      conf=None)
    # vis: [B,3,Hs,Ws] BGR (or [B,1,Hs,Ws] gray), th: [B,1,Hs,Ws]; float 0..1 or uint8; aligned
    #      (same pixel grid). Make them with training.datasets.pairs_to_tensors; a source a bit
    #      larger than out_hw (e.g. 384x480 for 256x320) gives crop variety.
    # generator: torch.Generator (any device; CPU is fine for GPU data) for reproducibility, or None.
    # pseudo_ir: None or callable([b,3,h,w] BGR 0..1) -> [b,1,h,w] 0..1, e.g.
    #            PseudoInfrared.from_pretrained(device=dev).translate_tensor; applied to the
    #            visible side of a random subset (probability p_pseudo_ir).
    out["visible"]        # [B,1,Ho,Wo] float 0..1 (gray, or pseudo-infrared where is_pseudo_ir)
    out["thermal"]        # [B,1,Ho,Wo] float 0..1
    out["H_t2v"]          # [B,3,3] float32: thermal pixel (x, y, 1) -> visible pixel, OpenCV
                          #   convention (pixel centres at integers), in the *output* images
    out["is_pseudo_ir"]   # [B] bool
    out["valid_thermal"]  # [B,1,Ho,Wo] bool: thermal pixel was sampled inside the source image
    out["visible_bgr"]    # [B,3,Ho,Wo] the warped colour visible before photometric augmentation

Geometry: the visible image is a random crop (scale, offset, optional flip) of the source,
``V'(p) = V(A_v p)``; ``H_t2v`` is sampled directly in output pixel coordinates (rotation about the
centre up to ``rot_deg``, scale in ``scale``, shift up to ``shift`` of the size, perspective up to
``persp``) and the thermal image is ``T'(q) = T(A_v H_t2v q)``. Since V and T share a grid,
``T'(q)`` and ``V'(H_t2v q)`` show the same scene point exactly.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F

DEFAULT_SYNTH_CONF = {
    # geometry (rig-like: thermal vs visible camera)
    "rot_deg": 15.0,          # max |rotation| of H_t2v
    "scale": (0.7, 1.45),     # isotropic scale range (log-uniform)
    "shift": 0.10,            # max shift as a fraction of the output width / height
    "persp": 0.08,            # max perspective term (fraction of the output size)
    "crop_scale": (0.6, 1.0),  # visible crop side as a fraction of the largest crop that fits
    "p_flip": 0.5,            # horizontal flip of the scene (both images)
    # visible photometric
    "vis_gain": (0.6, 1.4), "vis_bias": 0.1, "vis_channel_gain": 0.15, "vis_saturation": (0.5, 1.5),
    "vis_gamma": (0.7, 1.5), "vis_p_blur": 0.3, "vis_blur_sigma": (0.3, 1.5), "vis_noise": (0.0, 0.03),
    # thermal photometric (gain/offset drift, polarity, fixed-pattern noise)
    "th_gain": (0.7, 1.3), "th_offset": 0.15, "th_gamma": (0.8, 1.25), "th_p_polarity": 0.15,
    "th_fpn_col": (0.0, 0.02), "th_fpn_pix": (0.0, 0.015), "th_p_blur": 0.3,
    "th_blur_sigma": (0.3, 1.2), "th_noise": (0.0, 0.02),
    "photometric": True,
    # camera variation (augment_camera): what differs between the rigs users own
    "vis_p_dark": 0.2, "vis_dark_gain": (0.08, 0.4), "vis_dark_noise": (0.01, 0.05),  # night exposure
    "th_fpn_row": (0.0, 0.012),             # row stripes (readout), besides the column pattern
    "p_lowres": (0.2, 0.5),                 # (visible, thermal): seen through a lower-resolution sensor
    "lowres_factor": (1.3, 3.0),            # downsampling factor of that sensor
    "p_vignette": 0.35, "vignette": (0.1, 0.45),  # corner fall-off (either sign for thermal: cold/warm rim)
    "p_jpeg": 0.3, "jpeg_quality": (25, 90),      # lossy transport (image_transport compressed, video)
    "camera": True,
}

BGR2GRAY = (0.114, 0.587, 0.299)


def _u(g, n, lo, hi):
    """n uniform samples in [lo, hi) on the generator's device (CPU generators welcome)."""
    dev = g.device if g is not None else "cpu"
    return torch.rand(n, generator=g, device=dev, dtype=torch.float64) * (hi - lo) + lo


def _device_gen(g: Optional[torch.Generator], device) -> Optional[torch.Generator]:
    """A generator on ``device`` seeded from ``g``, so per-pixel noise is drawn where the data is."""
    if g is None:
        return None
    if torch.device(g.device).type == torch.device(device).type:
        return g
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=g, device=g.device))
    return torch.Generator(device=device).manual_seed(seed)


def sample_rig_homographies(b: int, out_hw: Tuple[int, int], conf: dict = None,
                            generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """[b,3,3] float64 rig-like homographies in pixel coordinates of an image of size out_hw."""
    c = {**DEFAULT_SYNTH_CONF, **(conf or {})}
    H, W = out_hw
    cx, cy = (W - 1) / 2.0, (H - 1) / 2.0
    ang = _u(generator, b, -1, 1) * math.radians(c["rot_deg"])
    s = torch.exp(_u(generator, b, math.log(c["scale"][0]), math.log(c["scale"][1])))
    tx = _u(generator, b, -1, 1) * c["shift"] * W
    ty = _u(generator, b, -1, 1) * c["shift"] * H
    px = _u(generator, b, -1, 1) * c["persp"] / W
    py = _u(generator, b, -1, 1) * c["persp"] / H
    eye = torch.eye(3, dtype=torch.float64).repeat(b, 1, 1)
    to_c, from_c, A, P = eye.clone(), eye.clone(), eye.clone(), eye.clone()
    to_c[:, 0, 2], to_c[:, 1, 2] = -cx, -cy
    from_c[:, 0, 2], from_c[:, 1, 2] = cx + tx.cpu(), cy + ty.cpu()
    cos, sin = torch.cos(ang).cpu(), torch.sin(ang).cpu()
    A[:, 0, 0], A[:, 0, 1], A[:, 1, 0], A[:, 1, 1] = s.cpu() * cos, -s.cpu() * sin, s.cpu() * sin, s.cpu() * cos
    P[:, 2, 0], P[:, 2, 1] = px.cpu(), py.cpu()
    return from_c @ A @ P @ to_c


def sample_crops(b: int, src_hw, out_hw, conf: dict = None, generator=None) -> torch.Tensor:
    """[b,3,3] float64 maps output pixel -> source pixel: random aspect-preserving crop (+ flip)."""
    c = {**DEFAULT_SYNTH_CONF, **(conf or {})}
    Hs, Ws = src_hw
    Ho, Wo = out_hw
    full = min(Ws / Wo, Hs / Ho)              # source pixels per output pixel of the largest crop
    k = full * _u(generator, b, *c["crop_scale"]).cpu()
    cw, ch = k * Wo, k * Ho
    x0 = _u(generator, b, 0, 1).cpu() * (Ws - cw)
    y0 = _u(generator, b, 0, 1).cpu() * (Hs - ch)
    flip = _u(generator, b, 0, 1).cpu() < c["p_flip"]
    A = torch.eye(3, dtype=torch.float64).repeat(b, 1, 1)
    # pixel centres at integers: src = x0 + (x + 0.5) * k - 0.5
    A[:, 0, 0], A[:, 0, 2] = k, x0 + 0.5 * k - 0.5
    A[:, 1, 1], A[:, 1, 2] = k, y0 + 0.5 * k - 0.5
    Fl = torch.eye(3, dtype=torch.float64).repeat(b, 1, 1)
    Fl[flip, 0, 0], Fl[flip, 0, 2] = -1.0, Wo - 1.0
    return A @ Fl


def warp_by_map(img: torch.Tensor, M: torch.Tensor, out_hw, mode="bilinear"):
    """out(p) = img(M p) for every output pixel p (pixel centres at integers); + in-bounds mask."""
    B, _, Hs, Ws = img.shape
    Ho, Wo = out_hw
    dev = img.device
    ys, xs = torch.meshgrid(torch.arange(Ho, device=dev, dtype=torch.float32),
                            torch.arange(Wo, device=dev, dtype=torch.float32), indexing="ij")
    pts = torch.stack([xs, ys, torch.ones_like(xs)], -1).view(1, -1, 3)
    q = pts @ M.to(dev, torch.float32).transpose(1, 2)
    q = q[..., :2] / q[..., 2:].clamp_min(1e-8)
    gx = (2 * q[..., 0] + 1) / Ws - 1
    gy = (2 * q[..., 1] + 1) / Hs - 1
    grid = torch.stack([gx, gy], -1).view(B, Ho, Wo, 2)
    out = F.grid_sample(img, grid, mode=mode, padding_mode="zeros", align_corners=False)
    valid = ((q[..., 0] >= -0.5) & (q[..., 0] <= Ws - 0.5) & (q[..., 1] >= -0.5) & (q[..., 1] <= Hs - 0.5))
    return out, valid.view(B, 1, Ho, Wo)


def warp_points(H: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Apply [B,3,3] homographies to [B,N,2] points."""
    p = torch.cat([pts, torch.ones_like(pts[..., :1])], -1) @ H.transpose(1, 2).to(pts.dtype)
    return p[..., :2] / p[..., 2:]


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample Gaussian blur ([B] sigmas, 0 = none) as one grouped convolution."""
    B, C, H, W = x.shape
    r = 3
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(x.device, x.dtype).clamp_min(1e-3).view(B, 1)
    k1 = torch.exp(-(t.view(1, -1) ** 2) / (2 * s ** 2))
    k1 = k1 / k1.sum(1, keepdim=True)
    k2 = (k1[:, :, None] * k1[:, None, :]).repeat_interleave(C, 0)[:, None]
    y = F.conv2d(F.pad(x.reshape(1, B * C, H, W), (r, r, r, r), mode="replicate"), k2, groups=B * C)
    return y.view(B, C, H, W)


def augment_visible(bgr: torch.Tensor, conf: dict, g=None) -> torch.Tensor:
    """Colour jitter (gain, bias, per-channel gain, saturation), gray, gamma, blur, noise."""
    c, B, dev = conf, bgr.shape[0], bgr.device
    v = lambda lo, hi: _u(g, B, lo, hi).to(dev, bgr.dtype).view(B, 1, 1, 1)  # noqa: E731
    gray_w = bgr.new_tensor(BGR2GRAY).view(1, 3, 1, 1)
    x = bgr * (1 + _u(g, 3 * B, -1, 1).to(dev, bgr.dtype).view(B, 3, 1, 1) * c["vis_channel_gain"])
    m = (x * gray_w).sum(1, keepdim=True)
    x = m + (x - m) * v(*c["vis_saturation"])
    x = x * v(*c["vis_gain"]) + v(-c["vis_bias"], c["vis_bias"])
    y = (x.clamp(0, 1) * gray_w).sum(1, keepdim=True)
    y = y.clamp_min(1e-6) ** v(*c["vis_gamma"])
    y = _blur_noise(y, c["vis_p_blur"], c["vis_blur_sigma"], c["vis_noise"], g)
    if c.get("vis_p_dark", 0) > 0:  # a night exposure: little signal, much sensor noise
        dark = (_u(g, B, 0, 1) < c["vis_p_dark"]).to(dev).view(B, 1, 1, 1)
        noise = torch.randn(y.shape, generator=_device_gen(g, dev), device=dev, dtype=y.dtype)
        night = (y * v(*c["vis_dark_gain"]) + noise * v(*c["vis_dark_noise"])).clamp(0, 1)
        y = torch.where(dark, night, y)
    return y


def augment_thermal(th: torch.Tensor, conf: dict, g=None) -> torch.Tensor:
    """Gain/offset drift, gamma, rare polarity flip, fixed-pattern noise (columns + pixels), blur, noise."""
    c, B, dev = conf, th.shape[0], th.device
    v = lambda lo, hi: _u(g, B, lo, hi).to(dev, th.dtype).view(B, 1, 1, 1)  # noqa: E731
    x = th * v(*c["th_gain"]) + v(-c["th_offset"], c["th_offset"])
    x = x.clamp(1e-6, 1) ** v(*c["th_gamma"])
    flip = (_u(g, B, 0, 1) < c["th_p_polarity"]).to(dev).view(B, 1, 1, 1)
    x = torch.where(flip, 1 - x, x)
    gd = _device_gen(g, dev)
    _, _, H, W = x.shape
    col = torch.randn(B, 1, 1, W, generator=gd, device=dev, dtype=x.dtype) * v(*c["th_fpn_col"])
    pix = torch.randn(B, 1, H, W, generator=gd, device=dev, dtype=x.dtype) * v(*c["th_fpn_pix"])
    x = x + col + pix
    if "th_fpn_row" in c:
        x = x + torch.randn(B, 1, H, 1, generator=gd, device=dev, dtype=x.dtype) * v(*c["th_fpn_row"])
    return _blur_noise(x, c["th_p_blur"], c["th_blur_sigma"], c["th_noise"], g)


def augment_camera(x: torch.Tensor, conf: dict, g=None, which: int = 0, signed_vignette: bool = False):
    """What another camera does to the same view: a coarser sensor, vignetting, JPEG artefacts.

    ``which`` picks the visible (0) or thermal (1) entry of per-camera settings. Applied to each
    modality independently, so the two sides of a pair differ in resolution and artefacts as the
    two cameras of a real rig do (the geometry, and so the ground truth, is unchanged).
    """
    c, B, dev = conf, x.shape[0], x.device
    _, _, H, W = x.shape
    v = lambda lo, hi: _u(g, B, lo, hi).to(dev, x.dtype).view(B, 1, 1, 1)  # noqa: E731
    low = (_u(g, B, 0, 1) < c["p_lowres"][which]).tolist()
    fac = _u(g, B, *c["lowres_factor"]).tolist()
    if any(low):
        x = x.clone()
        for i in [i for i, on in enumerate(low) if on]:
            size = (max(8, round(H / fac[i])), max(8, round(W / fac[i])))
            small = F.interpolate(x[i:i + 1], size=size, mode="area")
            x[i:i + 1] = F.interpolate(small, size=(H, W), mode="bilinear", align_corners=False)
    vig = (_u(g, B, 0, 1) < c["p_vignette"]).to(dev).view(B, 1, 1, 1)
    strength = v(*c["vignette"])
    if signed_vignette:
        strength = strength * torch.where(_u(g, B, 0, 1) < 0.5, -1.0, 1.0).to(dev, x.dtype).view(B, 1, 1, 1)
    ys = torch.linspace(-1, 1, H, device=dev, dtype=x.dtype).view(1, 1, H, 1)
    xs = torch.linspace(-1, 1, W, device=dev, dtype=x.dtype).view(1, 1, 1, W)
    r2 = (xs ** 2 + ys ** 2) / 2
    x = torch.where(vig, (x * (1 - strength * r2)).clamp(0, 1), x)
    jpeg = (_u(g, B, 0, 1) < c["p_jpeg"]).tolist()
    quality = _u(g, B, *c["jpeg_quality"]).tolist()
    if any(jpeg):  # OpenCV's codec on the CPU: no tensor library encodes JPEG
        import cv2
        import numpy as np
        x = x.clone()
        for i in [i for i, on in enumerate(jpeg) if on]:
            img = (x[i, 0].detach().float().cpu().numpy() * 255).round().astype(np.uint8)
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality[i])])
            if ok:
                dec = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
                x[i, 0] = torch.from_numpy(dec).to(dev, x.dtype)
    return x


def _blur_noise(x, p_blur, sigma_rng, noise_rng, g):
    B, dev = x.shape[0], x.device
    do = _u(g, B, 0, 1) < p_blur
    sig = torch.where(do, _u(g, B, *sigma_rng), torch.zeros(B, dtype=torch.float64, device=do.device))
    if bool(do.any()):
        x = torch.where(do.to(dev).view(B, 1, 1, 1), _blur(x, sig), x)
    n = _u(g, B, *noise_rng).to(dev, x.dtype).view(B, 1, 1, 1)
    x = x + torch.randn(x.shape, generator=_device_gen(g, dev), device=dev, dtype=x.dtype) * n
    return x.clamp(0, 1)


def _as01(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def synth_batch(vis: torch.Tensor, th: torch.Tensor, out_hw: Tuple[int, int] = (256, 320),
                generator: Optional[torch.Generator] = None,
                pseudo_ir: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                p_pseudo_ir: float = 0.3, conf: Optional[dict] = None) -> dict:
    """Warped, augmented training pairs with exact H_t2v from aligned pairs (see module docstring)."""
    c = {**DEFAULT_SYNTH_CONF, **(conf or {})}
    if vis.ndim != 4 or th.ndim != 4 or vis.shape[0] != th.shape[0] or vis.shape[-2:] != th.shape[-2:]:
        raise ValueError(f"need aligned [B,C,H,W] pairs, got visible {tuple(vis.shape)} thermal {tuple(th.shape)}")
    vis, th = _as01(vis), _as01(th)
    if vis.shape[1] == 1:
        vis = vis.expand(-1, 3, -1, -1)
    if th.shape[1] != 1:
        raise ValueError(f"thermal must have 1 channel, got {th.shape[1]}")
    B, dev = vis.shape[0], vis.device
    A_v = sample_crops(B, vis.shape[-2:], out_hw, c, generator)
    H_t2v = sample_rig_homographies(B, out_hw, c, generator)
    vis_w, _ = warp_by_map(vis, A_v, out_hw)
    th_w, valid_t = warp_by_map(th, A_v @ H_t2v, out_hw)
    if pseudo_ir is not None:
        is_pir = (_u(generator, B, 0, 1) < p_pseudo_ir).to(dev)
    else:
        is_pir = torch.zeros(B, dtype=torch.bool, device=dev)
    if c["photometric"]:
        vis_g = augment_visible(vis_w, c, generator)
        th_o = augment_thermal(th_w, c, generator)
    else:
        vis_g = (vis_w * vis_w.new_tensor(BGR2GRAY).view(1, 3, 1, 1)).sum(1, keepdim=True)
        th_o = th_w
    if bool(is_pir.any()):
        idx = is_pir.nonzero().flatten()
        with torch.no_grad():
            pir = pseudo_ir(vis_w[idx]).to(dev, vis_g.dtype)
        if c["photometric"]:
            pir = augment_thermal(pir, c, generator)
        vis_g = vis_g.clone()
        vis_g[idx] = pir
    if c["photometric"] and c.get("camera", False):
        vis_g = augment_camera(vis_g, c, generator, which=0)
        th_o = augment_camera(th_o, c, generator, which=1, signed_vignette=True)
    th_o = th_o * valid_t  # outside the source: black, as a real out-of-view border
    return {"visible": vis_g, "thermal": th_o, "H_t2v": H_t2v.to(dev, torch.float32), "is_pseudo_ir": is_pir,
            "valid_thermal": valid_t, "visible_bgr": vis_w}
