"""Make a two-camera ROS 2 bag from visible/thermal pairs, with a known rig homography.

Why: bag replay must be testable (and demonstrable) without a robot. The recording mimics a
real rig: each camera has its own rate, resolution, encoding (16-bit thermal counts included),
transport (raw Image, or CompressedImage as image_transport records it) and stamps, and the
thermal image is rendered through a rig homography, which is then the exact thermal -> visible
ground truth of every pair in the bag.

Timeline: both cameras run at their own constant rates from time 0, the slower one offset by
0.3 of a fast period (the cameras are not in lockstep). The slower camera shows scene k in its
k-th frame; each faster-camera frame shows the scene of the slower frame nearest to it, so the
synchronizer's pairing (nearest stamps) always pairs views of the same scene. The faster camera
runs one frame past the last slow frame, so that the last pair can be decided.
"""
from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .. import image_codec
from ..errors import InputError
from ..options import Option, by_name
from .io import COMPRESSED_TYPE, IMAGE_TYPE, BagError, BagWriter

VISIBLE_TOPIC = "/camera/visible/image_raw"
THERMAL_TOPIC = "/camera/thermal/image_raw"
START_NS = 1_700_000_000 * 1_000_000_000  # a plausible wall-clock epoch for the first frame

#: The recording's settings (make-bag's --limit, --visible-rate, ...); sizes are checked per side.
OPTIONS: Tuple[Option, ...] = (
    Option("limit", None, "Most pairs to read (default: all)", range=(1, 1_000_000), kind=int),
    Option("visible_rate", 30.0, "Visible camera rate [Hz]", range=(0.1, 1000.0)),
    Option("thermal_rate", 9.0, "Thermal camera rate [Hz]", range=(0.1, 1000.0)),
    Option("visible_size", None, "Visible image width and height [px] (default: the first visible image's)",
           range=(8, 16384), kind=int),
    Option("thermal_size", None, "Thermal image width and height [px] (default: the visible size)",
           range=(8, 16384), kind=int),
    Option("jpeg_quality", 95, "JPEG quality of compressed visible images (image_transport's default)",
           range=(1, 100)),
)
SPECS = by_name(OPTIONS)


@dataclass
class Pair:
    """A visible BGR/gray uint8 image, a thermal image, and thermal -> visible truth.

    The thermal image is uint8, or uint16 radiometric counts, which are recorded unchanged in
    16-bit encodings (a camera's counts must reach the bag as the camera sent them)."""

    visible: np.ndarray
    thermal: np.ndarray
    H: np.ndarray  # 3x3 thermal px -> visible px for these two images
    name: str = ""


def pairs_from_folder(folder: str, limit: Optional[int] = None) -> List[Pair]:
    """Aligned pairs from ``folder/visible/*`` and ``folder/thermal/*`` with matching file stems.

    Thermal images keep their bit depth (a 16-bit PNG or TIFF stays uint16)."""
    _check("limit", limit)
    vis_dir, th_dir = os.path.join(folder, "visible"), os.path.join(folder, "thermal")
    if not (os.path.isdir(vis_dir) and os.path.isdir(th_dir)):
        raise BagError(f"{folder} must contain visible/ and thermal/ sub-folders")
    thermal = {os.path.splitext(os.path.basename(p))[0]: p for p in glob.glob(os.path.join(th_dir, "*"))}
    out = []
    for vp in sorted(glob.glob(os.path.join(vis_dir, "*"))):
        stem = os.path.splitext(os.path.basename(vp))[0]
        if stem not in thermal:
            continue
        v = cv2.imread(vp, cv2.IMREAD_COLOR)
        t = cv2.imread(thermal[stem], cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)  # 16 bits stay 16
        if v is None or t is None:
            raise BagError(f"cannot read image pair {stem} in {folder}")
        if t.dtype not in (np.uint8, np.uint16):
            raise BagError(f"{thermal[stem]}: thermal images must be 8 or 16 bit, got {t.dtype}")
        # Aligned sets share one view; a size difference is a plain rescale.
        S = np.diag([v.shape[1] / t.shape[1], v.shape[0] / t.shape[0], 1.0])
        out.append(Pair(v, t, S, stem))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise BagError(f"no pairs with matching names in {vis_dir} and {th_dir}")
    return out


def pairs_from_npz(paths: Sequence[str], limit: Optional[int] = None) -> List[Pair]:
    """Pairs from npz files of the shared format; only homography ('H') ground truth is usable.

    uint8 and uint16 thermal images are kept; other types are scaled to 8 bits."""
    from ..evaluation import load_pair_npz

    _check("limit", limit)
    out = []
    for p in sorted(paths)[:limit]:
        z = load_pair_npz(p)
        if "H" not in z:
            raise BagError(f"{p}: dense ('grid') ground truth cannot be re-warped by a rig homography; "
                           "use pairs with 'H' ground truth")
        th = z["thermal"]
        if th.dtype not in (np.uint8, np.uint16):
            th = cv2.normalize(th, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
        out.append(Pair(z["visible"], th, np.asarray(z["H"], np.float64), os.path.basename(p)))
    if not out:
        raise BagError("no npz pairs given")
    return out


def _check(name: str, value):
    """``value`` checked by the option ``name`` (sizes: each side); raises BagError."""
    sides = isinstance(value, (tuple, list))
    if sides and len(value) != 2:
        raise BagError(f"{name} must be (width, height), got {value!r}")
    for v in (value if sides else [value]):
        problem = SPECS[name].problem(v)
        if problem:
            raise BagError(problem)


def default_rig_homography(visible_size: Tuple[int, int], thermal_size: Tuple[int, int],
                           rotation_deg: float = 3.0, coverage: float = 0.8,
                           shift=(0.03, -0.02), perspective=(2e-5, -1e-5)) -> np.ndarray:
    """A plausible rig: the thermal view covers ``coverage`` of the visible one, slightly rotated.

    Returns the 3x3 thermal px -> visible px matrix (the bag's ground truth).
    """
    (vw, vh), (tw, th) = visible_size, thermal_size
    s = coverage * min(vw / tw, vh / th)
    a = np.deg2rad(rotation_deg)
    to_centre = np.array([[1, 0, -(tw - 1) / 2], [0, 1, -(th - 1) / 2], [0, 0, 1.0]])
    rs = np.array([[s * np.cos(a), -s * np.sin(a), 0], [s * np.sin(a), s * np.cos(a), 0], [0, 0, 1.0]])
    persp = np.array([[1, 0, 0], [0, 1, 0], [perspective[0], perspective[1], 1.0]])
    to_vis = np.array([[1, 0, (vw - 1) / 2 + shift[0] * vw], [0, 1, (vh - 1) / 2 + shift[1] * vh], [0, 0, 1.0]])
    H = to_vis @ rs @ persp @ to_centre
    return H / H[2, 2]


def render_pair(pair: Pair, visible_size: Tuple[int, int], thermal_size: Tuple[int, int],
                rig_H: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Resize the visible image and render the thermal one as the rig would see it."""
    vw, vh = visible_size
    v = pair.visible
    S = np.diag([vw / v.shape[1], vh / v.shape[0], 1.0])
    v = cv2.resize(v, (vw, vh), interpolation=cv2.INTER_AREA) if (v.shape[1], v.shape[0]) != (vw, vh) else v
    # thermal_out(x) = thermal_in(M x): out px -> visible (rig) -> input thermal px
    M = np.linalg.inv(S @ pair.H) @ rig_H
    fill = float(np.median(pair.thermal))
    t = cv2.warpPerspective(pair.thermal, M, thermal_size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    return v, t


def encode_visible(bgr: np.ndarray, encoding: str) -> np.ndarray:
    """Convert a BGR/gray uint8 image to the array an Image message of ``encoding`` holds."""
    gray = bgr if bgr.ndim == 2 else None
    if encoding == "bgr8":
        return bgr if bgr.ndim == 3 else cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
    if encoding == "rgb8":
        return cv2.cvtColor(bgr if bgr.ndim == 3 else cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR), cv2.COLOR_BGR2RGB)
    gray = gray if gray is not None else cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    if encoding == "mono8":
        return gray
    if encoding == "mono16":
        return gray.astype(np.uint16) * 257
    raise BagError(f"unknown visible encoding {encoding!r}; use one of {image_codec.VISIBLE_ENCODINGS}")


def encode_thermal(t8: np.ndarray, encoding: str) -> np.ndarray:
    """Map a display-scaled thermal image to what a camera of ``encoding`` would send.

    16-bit: radiometric-looking counts (offset 7000, 30 counts per grey level), so that the
    node's percentile normalisation is exercised; 32FC1: degrees Celsius (10 + 0.15 per level).
    A uint16 image already holds counts: 16-bit encodings record it unchanged, 32FC1 as float
    counts, mono8 scaled to its range.
    """
    if t8.dtype == np.uint16:
        if encoding in ("mono16", "16UC1"):
            return t8
        if encoding == "32FC1":
            return t8.astype(np.float32)
        if encoding == "mono8":
            return cv2.normalize(t8, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if encoding == "mono8":
        return t8
    if encoding in ("mono16", "16UC1"):
        return (7000 + t8.astype(np.uint16) * 30).astype(np.uint16)
    if encoding == "32FC1":
        return (10.0 + t8.astype(np.float32) * 0.15).astype(np.float32)
    raise BagError(f"unknown thermal encoding {encoding!r}; use one of {image_codec.THERMAL_ENCODINGS}")


def timeline(n_scenes: int, visible_rate: float, thermal_rate: float) -> List[Tuple[int, str, int]]:
    """(stamp offset ns, 'visible'|'thermal', scene index) for every frame, in time order."""
    if visible_rate <= 0 or thermal_rate <= 0:
        raise BagError("camera rates must be positive")
    period = 1.0 / min(visible_rate, thermal_rate)
    fast_rate = max(visible_rate, thermal_rate)
    slow = "thermal" if thermal_rate <= visible_rate else "visible"
    fast = "visible" if slow == "thermal" else "thermal"
    frames = []
    phase = 0.3 / fast_rate
    for k in range(n_scenes):
        frames.append((int(round((k * period + phase) * 1e9)), slow, k))
    j = 0
    end = (n_scenes - 1) * period + phase + 1.0 / fast_rate  # one fast frame past the last slow one
    while j / fast_rate <= end + 1e-9:
        t = j / fast_rate
        k = int(np.clip(np.floor((t - phase) / period + 0.5), 0, n_scenes - 1))  # nearest slow frame
        frames.append((int(round(t * 1e9)), fast, k))
        j += 1
    frames.sort(key=lambda f: (f[0], f[1]))
    return frames


def make_bag(out: str, pairs: Sequence[Pair], *, storage: str = "sqlite3", visible_rate: float = 30.0,
             thermal_rate: float = 9.0, rig_homography: Optional[np.ndarray] = None,
             visible_size: Optional[Tuple[int, int]] = None, thermal_size: Optional[Tuple[int, int]] = None,
             visible_encoding: str = "bgr8", thermal_encoding: str = "mono8",
             visible_topic: str = VISIBLE_TOPIC, thermal_topic: str = THERMAL_TOPIC,
             start_ns: int = START_NS, progress: bool = False, compressed: bool = False,
             jpeg_quality: int = 95) -> dict:
    """Write the bag; returns a dict with the rig homography (ground truth) and frame counts.

    Sizes are (width, height); by default both cameras take the first visible image's size.
    ``rig_homography`` (thermal -> visible) defaults to :func:`default_rig_homography`.
    ``compressed``: record as image_transport's compressed plugin does on a robot,
    ``sensor_msgs/CompressedImage`` on ``<topic>/compressed``: 8-bit visible as JPEG
    (``jpeg_quality``), 16-bit visible and every thermal image as PNG (lossless, 16 bits kept).
    """
    if not pairs:
        raise BagError("no pairs to write")
    for name, value in (("visible_rate", visible_rate), ("thermal_rate", thermal_rate), ("jpeg_quality", jpeg_quality),
                        ("visible_size", visible_size), ("thermal_size", thermal_size)):
        _check(name, value)
    first = pairs[0].visible
    visible_size = tuple(visible_size or (first.shape[1], first.shape[0]))
    thermal_size = tuple(thermal_size or visible_size)
    rig_H = default_rig_homography(visible_size, thermal_size) if rig_homography is None \
        else np.asarray(rig_homography, np.float64)
    if rig_H.shape != (3, 3):
        raise BagError(f"rig homography must be 3x3, got {rig_H.shape}")
    encode_visible(np.zeros((2, 2, 3), np.uint8), visible_encoding)  # fail before writing anything
    encode_thermal(np.zeros((2, 2), np.uint8), thermal_encoding)
    if compressed:
        if thermal_encoding == "32FC1":
            raise BagError("32FC1 thermal images cannot go through the compressed transport (PNG and "
                           "JPEG hold integers); use mono16 or 16UC1, or record raw")
        visible_topic, thermal_topic = f"{visible_topic}/compressed", f"{thermal_topic}/compressed"
    msgtype = COMPRESSED_TYPE if compressed else IMAGE_TYPE
    frames = timeline(len(pairs), visible_rate, thermal_rate)
    rendered = {}
    counts = {"visible": 0, "thermal": 0}
    bar = _bar(len(frames), "make-bag", progress)
    with BagWriter(out, storage) as w:
        Msg = w.msg_class(msgtype)
        for offset, cam, k in frames:
            if k not in rendered:
                rendered = {k: render_pair(pairs[k], visible_size, thermal_size, rig_H)}
            v, t = rendered[k]
            if cam == "visible":
                arr, enc = encode_visible(v, visible_encoding), visible_encoding
                topic, frame = visible_topic, "visible_optical"
            else:
                arr, enc = encode_thermal(t, thermal_encoding), thermal_encoding
                topic, frame = thermal_topic, "thermal_optical"
            stamp = start_ns + offset
            if compressed:
                fields = _compressed_fields(arr, enc, "png" if cam == "thermal" else "", jpeg_quality)
            else:
                fields = image_codec.numpy_to_image_fields(arr, enc, numpy_data=True)
            w.write(topic, msgtype, stamp, Msg(header=w.header(stamp, frame), **fields))
            counts[cam] += 1
            bar.update(1)
    bar.close()
    return {"bag": out, "storage": storage, "rig_homography": rig_H.tolist(), "frames": counts,
            "scenes": len(pairs), "visible_size": list(visible_size), "thermal_size": list(thermal_size),
            "visible_topic": visible_topic, "thermal_topic": thermal_topic,
            "visible_encoding": visible_encoding, "thermal_encoding": thermal_encoding,
            "transport": "compressed" if compressed else "raw"}


def _compressed_fields(arr: np.ndarray, encoding: str, codec: str, jpeg_quality: int) -> dict:
    """CompressedImage fields (without header) for one frame, as image_transport writes them."""
    try:
        fmt, payload = image_codec.encode_compressed(arr, encoding, codec, jpeg_quality=jpeg_quality)
    except InputError as e:
        raise BagError(str(e)) from None
    return {"format": fmt, "data": np.frombuffer(payload, np.uint8)}


def write_gt_json(path: str, H: np.ndarray) -> None:
    """The --gt-homography file bag-eval reads: a 3x3 JSON list of lists."""
    with open(path, "w") as f:
        json.dump(np.asarray(H, float).tolist(), f)


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="msg", disable=not enabled, leave=False)
