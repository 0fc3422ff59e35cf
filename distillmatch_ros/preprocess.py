"""Checking and normalising the two input images before they reach the network.

Thermal cameras give 8-bit, 16-bit radiometric counts or float temperatures. Plain min/max
scaling flickers with every hot or cold outlier, so counts are mapped to 8 bits between low and
high percentiles (optionally followed by CLAHE).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import cv2
import numpy as np

from .errors import InputError
from .options import Option, defaults

_THERMAL_DTYPES = (np.uint8, np.uint16, np.float32)


def check_visible(visible: np.ndarray) -> np.ndarray:
    """Validate a visible image (HxW or HxWx3 uint8, BGR) and return it as HxW gray uint8."""
    if not isinstance(visible, np.ndarray):
        raise InputError(f"visible image must be a numpy array, got {type(visible).__name__}")
    if visible.dtype != np.uint8:
        raise InputError(f"visible image must be uint8 (BGR or gray), got dtype {visible.dtype}")
    if visible.ndim == 3 and visible.shape[2] == 1:
        visible = visible[..., 0]
    if visible.ndim == 3 and visible.shape[2] == 3:
        _check_size(visible, "visible")
        return cv2.cvtColor(visible, cv2.COLOR_BGR2GRAY)
    if visible.ndim != 2:
        raise InputError(f"visible image must be HxW or HxWx3, got shape {visible.shape}")
    _check_size(visible, "visible")
    return visible


#: Smallest range of raw values stretched to the full 8 bits, per dtype (``min_span=0``): a
#: flat-field-correction frame spans a few counts of sensor noise, and stretching that to 0-255
#: turns noise into full-contrast texture that the network then matches. 64 counts is far
#: below any scene (a 14-bit radiometric camera gives about 100 counts per kelvin) and far
#: above FFC noise; 0.5 for float temperatures (degrees).
MIN_SPAN = {np.dtype(np.uint16): 64.0, np.dtype(np.float32): 0.5}


#: The thermal normalisation settings (Matcher options; the node's parameters).
OPTIONS = (
    Option("thermal_low_pct", 1.0, "Thermal normalisation: low percentile", range=(0.0, 50.0)),
    Option("thermal_high_pct", 99.0, "Thermal normalisation: high percentile", range=(50.0, 100.0)),
    Option("thermal_clahe", False, "Thermal normalisation: apply CLAHE"),
    Option("thermal_min_span", 0.0, "Thermal normalisation: narrowest raw range stretched to 8 bits "
           "(0 = 64 counts for 16-bit, 0.5 for float), so flat-field frames stay flat", range=(0.0, 1e6)),
)
DEFAULTS = defaults(OPTIONS)


def normalize_thermal(thermal: np.ndarray, low_pct: float = DEFAULTS["thermal_low_pct"],
                      high_pct: float = DEFAULTS["thermal_high_pct"], clahe: bool = DEFAULTS["thermal_clahe"],
                      min_span: float = DEFAULTS["thermal_min_span"]) -> np.ndarray:
    """Validate a thermal image (HxW uint8/uint16/float32) and map it robustly to HxW uint8.

    uint8 images pass unchanged (they are already display-scaled by the camera); 16-bit counts
    and float temperatures are clipped between the ``low_pct`` and ``high_pct`` percentiles.
    A percentile range narrower than ``min_span`` (0: :data:`MIN_SPAN` of the dtype) is widened
    to it around its centre, so a flat frame stays flat instead of becoming amplified noise.
    """
    if not isinstance(thermal, np.ndarray):
        raise InputError(f"thermal image must be a numpy array, got {type(thermal).__name__}")
    if thermal.ndim == 3 and thermal.shape[2] == 1:
        thermal = thermal[..., 0]
    if thermal.ndim != 2:
        raise InputError(f"thermal image must be single-channel HxW, got shape {thermal.shape}")
    if thermal.dtype not in _THERMAL_DTYPES:
        raise InputError(f"thermal image must be uint8, uint16 or float32, got dtype {thermal.dtype}")
    _check_size(thermal, "thermal")
    if thermal.dtype == np.float32 and not np.isfinite(thermal).all():
        raise InputError("thermal image contains NaN or infinite values")
    if thermal.dtype == np.uint8:
        out = thermal
    else:
        # Percentiles on a strided subsample: same answer to within a count, 16x cheaper.
        sample = thermal[::4, ::4]
        lo, hi = (float(v) for v in np.percentile(sample, [low_pct, high_pct]))
        span = float(min_span) if min_span and min_span > 0 else MIN_SPAN.get(thermal.dtype, 1.0)
        if hi - lo < span:
            mid = 0.5 * (lo + hi)
            lo, hi = mid - 0.5 * span, mid + 0.5 * span
        scaled = (thermal.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
        out = np.clip(scaled, 0, 255).astype(np.uint8)
    if clahe:
        out = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(out)
    return out


def thermal_gray(thermal: np.ndarray, options: Optional[Mapping[str, Any]] = None) -> np.ndarray:
    """:func:`normalize_thermal` with a matcher's options (any missing one at its default): the
    8-bit thermal image that matcher sees."""
    o = {**DEFAULTS, **{k: v for k, v in (options or {}).items() if k in DEFAULTS}}
    return normalize_thermal(thermal, o["thermal_low_pct"], o["thermal_high_pct"], o["thermal_clahe"],
                             o["thermal_min_span"])


def _check_size(image: np.ndarray, name: str) -> None:
    h, w = image.shape[:2]
    if h < 16 or w < 16:
        raise InputError(f"{name} image is too small ({w}x{h}); at least 16x16 pixels are needed")
