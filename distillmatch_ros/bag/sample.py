"""A sample visible/thermal recording made on the spot, for the demo (no data in this repo).

Why generated: a newcomer must see the product work with no robot, camera, download or
``../shared``. The photos come from scikit-image's wheel (public-domain / CC0 images: NASA's
astronaut and rocket, Rachel Michetti's coffee, Stefan van der Walt's cat Chelsea), the thermal
side is made from each visible frame by the shipped V2I-GAN (pseudo-infrared), and a rig
homography places it in a smaller thermal camera, so the exact ground truth is known.
"""
from __future__ import annotations

import os
from importlib import resources
from typing import Callable, List, Optional, Tuple

import cv2
import numpy as np

from .io import BagError
from .make_bag import Pair

#: The demo's cameras: a 640x480 visible and a 320x256 thermal camera.
VISIBLE_SIZE = (640, 480)
THERMAL_SIZE = (320, 256)

#: photos in scikit-image's wheel with a licence that allows any use (see its data/README.txt)
PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg")


def sample_photos() -> List[Tuple[str, np.ndarray]]:
    """(name, BGR uint8) for each bundled photo; a clear error when scikit-image is missing."""
    try:
        data = resources.files("skimage") / "data"
    except ModuleNotFoundError:
        raise BagError("the demo needs scikit-image for its sample photos: pip install scikit-image") from None
    out = []
    for name in PHOTOS:
        path = data / name
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise BagError(f"sample photo {path} is missing from the installed scikit-image")
        out.append((name, img))
    return out


SIMPLE = "simple"  # pseudo_infrared_fn source naming the stand-in below


def simple_pseudo_thermal(bgr: np.ndarray) -> np.ndarray:
    """Crude visible -> thermal-looking stand-in, used only when asked for (``--simple-thermal``).

    Warm ~ red-dominant surfaces (skin, brick) and brightness, cold ~ blue (sky); then the blur
    and low texture of a microbolometer. Not a model of physics: it only changes appearance
    enough that a visible-only matcher would be challenged.
    """
    f = bgr.astype(np.float32)
    b, g, r = f[..., 0], f[..., 1], f[..., 2]
    gray = 0.114 * b + 0.587 * g + 0.299 * r
    t = 0.6 * cv2.GaussianBlur(gray, (0, 0), 3.0) + 0.8 * (r - 0.5 * (g + b)) + 0.25 * gray
    t = cv2.GaussianBlur(t, (0, 0), 1.2)
    lo, hi = np.percentile(t, [1, 99])
    return np.clip((t - lo) * (255.0 / max(hi - lo, 1e-3)), 0, 255).astype(np.uint8)


def pseudo_infrared_fn(source: Optional[str] = None) -> Tuple[Callable[[np.ndarray], np.ndarray], str]:
    """The thermal side of the sample recording and how it was made.

    ``source``: a V2I-GAN name or file (default: the shipped ``v2i_gan``), or ``"simple"`` for
    :func:`simple_pseudo_thermal`. Never falls back on its own: a demo that silently swapped the
    GAN for the stand-in would report figures of another experiment. A missing generator raises
    CheckpointError listing where it was looked for.
    """
    if source == SIMPLE:
        return simple_pseudo_thermal, "simple pseudo-thermal stand-in (asked for with --simple-thermal)"
    from .. import model_files
    from ..pseudo_infrared import PseudoInfrared

    gan = PseudoInfrared.from_pretrained(source)  # CheckpointError naming where it looked
    return gan, f"V2I-GAN ({model_files.resolve(source, model_files.V2I_GAN)})"


def scene_crops(img: np.ndarray, size: Tuple[int, int], n: int) -> List[np.ndarray]:
    """``n`` views of one photo (full frame, then zoomed-in crops, down to 0.3 of the frame), as a
    moving camera would see."""
    h, w = img.shape[:2]
    vw, vh = size
    out = []
    for i in range(n):
        zoom = max(0.3, 1.0 - 0.12 * i)
        ch, cw = int(h * zoom), int(min(w * zoom, h * zoom * vw / vh))
        ch = min(ch, int(cw * vh / vw))
        y0 = int((h - ch) * (0.5 + 0.25 * np.sin(i * 2.1)))
        x0 = int((w - cw) * (0.5 + 0.25 * np.cos(i * 1.3)))
        out.append(cv2.resize(img[y0:y0 + ch, x0:x0 + cw], (vw, vh), interpolation=cv2.INTER_AREA))
    return out


def sample_pairs(visible_size=(640, 480), views_per_photo: int = 3,
                 pseudo_ir: Optional[Callable] = None, source: Optional[str] = None) -> Tuple[List[Pair], str]:
    """Aligned pairs (identity ground truth) made from the bundled photos; returns (pairs, how).

    The thermal side comes from ``pseudo_ir`` when given, else from :func:`pseudo_infrared_fn`
    (``source``).
    """
    how = "given function"
    if pseudo_ir is None:
        pseudo_ir, how = pseudo_infrared_fn(source)
    pairs = []
    for name, img in sample_photos():
        for i, view in enumerate(scene_crops(img, visible_size, views_per_photo)):
            pairs.append(Pair(view, np.asarray(pseudo_ir(view), np.uint8), np.eye(3), f"{name}#{i}"))
    return pairs, how


def write_sample_inputs(folder: str, pairs: List[Pair]) -> None:
    """Save the aligned pairs in the visible/ + thermal/ layout make-bag reads (for inspection)."""
    for sub in ("visible", "thermal"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    for k, p in enumerate(pairs):
        cv2.imwrite(os.path.join(folder, "visible", f"{k:03d}.jpg"), p.visible)
        cv2.imwrite(os.path.join(folder, "thermal", f"{k:03d}.png"), p.thermal)
