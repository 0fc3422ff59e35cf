"""Thermal-into-visible fusion and match visualisation (what the node publishes as images).

Two fusion modes:
* ``alpha``: the warped thermal image through a colour map, alpha-blended over the visible image;
* ``structure``: structure-preserving fusion: the visible image's fine detail (its Laplacian-like
  high-pass) on top of the thermal image's low-pass intensity, so edges stay where the visible
  camera sees them and hot/cold regions keep the thermal camera's contrast.
Outside the warped thermal footprint the visible image is shown unchanged.
"""
from __future__ import annotations

from typing import Optional, Tuple

import cv2
import numpy as np

from .errors import InputError
from .preprocess import normalize_thermal

FUSION_MODES = ("alpha", "structure")


def _bgr(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 3:
        return img
    raise InputError(f"expected HxW or HxWx3 image, got shape {img.shape}")


_mask_cache: dict = {}


def footprint(H: np.ndarray, thermal_shape, visible_shape) -> np.ndarray:
    """uint8 mask (255 inside) of the thermal image's footprint on the visible grid.

    A rig holds one homography for many frames, so the last few masks are cached by H and sizes.
    """
    key = (np.asarray(H, np.float64).tobytes(), tuple(thermal_shape[:2]), tuple(visible_shape[:2]))
    mask = _mask_cache.get(key)
    if mask is None:
        h, w = visible_shape[:2]
        mask = cv2.warpPerspective(np.full(thermal_shape[:2], 255, np.uint8), H, (w, h),
                                   flags=cv2.INTER_NEAREST, borderValue=0)
        if len(_mask_cache) >= 4:
            _mask_cache.pop(next(iter(_mask_cache)))
        _mask_cache[key] = mask
    return mask


def warp_thermal(thermal_u8: np.ndarray, H: np.ndarray, visible_shape) -> Tuple[np.ndarray, np.ndarray]:
    """The thermal image resampled on the visible pixel grid, and the uint8 mask (255 inside) of
    where it is defined."""
    h, w = visible_shape[:2]
    warped = cv2.warpPerspective(thermal_u8, H, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    return warped, footprint(H, thermal_u8.shape, visible_shape)


def fuse(visible: np.ndarray, thermal: np.ndarray, H: Optional[np.ndarray], mode: str = "alpha",
         alpha: float = 0.5, colormap: int = cv2.COLORMAP_INFERNO) -> np.ndarray:
    """Fused BGR image on the visible grid. ``H`` maps thermal -> visible; None shows only visible."""
    if mode not in FUSION_MODES:
        raise ValueError(f"unknown fusion mode {mode!r}; choose from {FUSION_MODES}")
    vis = _bgr(visible)
    if H is None:
        return vis.copy()
    warped, mask = warp_thermal(normalize_thermal(thermal), H, vis.shape)
    if mode == "alpha":
        colour = cv2.applyColorMap(warped, colormap)
        blended = cv2.addWeighted(vis, 1.0 - alpha, colour, alpha, 0.0)
    else:
        gray = cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY).astype(np.float32)
        detail = gray - cv2.GaussianBlur(gray, (0, 0), 3.0)
        base = cv2.GaussianBlur(warped.astype(np.float32), (0, 0), 1.0)
        lum = np.clip(base + (0.5 + alpha) * detail, 0, 255).astype(np.uint8)
        blended = cv2.applyColorMap(lum, colormap) if colormap is not None else _bgr(lum)
    out = vis.copy()
    cv2.copyTo(blended, mask, out)  # ~10x faster than boolean-mask indexing at 1280x1024
    return out


def draw_matches(visible: np.ndarray, thermal: np.ndarray, result, max_lines: int = 300) -> np.ndarray:
    """Side-by-side visible | thermal with match lines (green inliers, red outliers)."""
    vis = _bgr(visible)
    th = _bgr(normalize_thermal(thermal))
    h = max(vis.shape[0], th.shape[0])
    canvas = np.zeros((h, vis.shape[1] + th.shape[1], 3), np.uint8)
    canvas[:vis.shape[0], :vis.shape[1]] = vis
    canvas[:th.shape[0], vis.shape[1]:] = th
    n = len(result.visible_points)
    inl = result.inliers if len(result.inliers) == n else np.zeros(n, bool)
    step = max(1, n // max_lines)
    for i in range(0, n, step):
        a = tuple(int(round(v)) for v in result.visible_points[i])
        b = result.thermal_points[i]
        b = (int(round(b[0])) + vis.shape[1], int(round(b[1])))
        colour = (0, 200, 0) if inl[i] else (0, 0, 230)
        cv2.line(canvas, a, b, colour, 1, cv2.LINE_AA)
        cv2.circle(canvas, a, 2, colour, -1)
        cv2.circle(canvas, b, 2, colour, -1)
    return canvas
