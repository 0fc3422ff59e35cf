"""sensor_msgs/Image <-> numpy, without cv_bridge (not installable from the registries here).

Duck-typed: any object with ``height, width, encoding, is_bigendian, step, data`` works, so
rclpy messages and ``rosbags`` messages go through the same code (the node and bag evaluation
share it). Rows may be padded (``step > width * bytes_per_pixel``) and data may be big-endian;
both are honoured. Anything that cannot be decoded raises :class:`InputError` with a message an
operator can act on, and nothing here imports rclpy.
"""
from __future__ import annotations

import array
from typing import Any, Dict, Tuple

import cv2
import numpy as np

from .errors import InputError

#: encoding -> (numpy dtype, channels)
ENCODINGS: Dict[str, Tuple[np.dtype, int]] = {
    "bgr8": (np.dtype(np.uint8), 3),
    "rgb8": (np.dtype(np.uint8), 3),
    "mono8": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
VISIBLE_ENCODINGS = ("bgr8", "rgb8", "mono8", "mono16")
THERMAL_ENCODINGS = ("mono8", "mono16", "16UC1", "32FC1")

# A sanity bound against corrupt headers (width*height overflowing memory): 64 Mpx.
MAX_PIXELS = 64 * 1024 * 1024


def _data_buffer(data: Any) -> np.ndarray:
    """View a message's ``data`` field (array.array, bytes, numpy, list) as flat uint8."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype.itemsize == 1 else \
            np.frombuffer(data.tobytes(), np.uint8)
    try:
        return np.frombuffer(memoryview(data).cast("B"), np.uint8)
    except TypeError:
        try:
            return np.asarray(data, dtype=np.uint8).reshape(-1)
        except (TypeError, ValueError, OverflowError) as e:
            raise InputError(f"image data is not a byte sequence ({type(data).__name__})") from e


def check_image(msg: Any, allowed: Tuple[str, ...] = tuple(ENCODINGS)) -> np.ndarray:
    """Validate an Image message's header against its data without copying pixels.

    Returns the data as a flat uint8 view; raises :class:`InputError` saying what is wrong.
    Cheap enough to run in a subscription callback, so bad frames are rejected before they
    take a synchronizer slot.
    """
    encoding = str(getattr(msg, "encoding", ""))
    if encoding not in allowed:
        raise InputError(f"unsupported image encoding '{encoding}'; supported: {', '.join(allowed)}")
    dtype, channels = ENCODINGS[encoding]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise InputError(f"empty image ({w}x{h}, encoding {encoding})")
    if h * w > MAX_PIXELS:
        raise InputError(f"image too large ({w}x{h}); at most {MAX_PIXELS} pixels")
    row_bytes = w * channels * dtype.itemsize
    if step < row_bytes:
        raise InputError(f"step {step} is smaller than width*bytes_per_pixel = {row_bytes} "
                         f"({w}x{h} {encoding})")
    buf = _data_buffer(msg.data)
    if buf.size != step * h:
        raise InputError(f"image data size {buf.size} does not match step*height = {step}*{h} = "
                         f"{step * h} ({w}x{h} {encoding})")
    return buf


def image_to_numpy(msg: Any, allowed: Tuple[str, ...] = tuple(ENCODINGS)) -> np.ndarray:
    """Decode an Image message into a native-endian array owning its memory.

    Returns HxW for one channel, HxWx3 for bgr8/rgb8 (channel order as in the message).
    ``allowed`` restricts the encodings accepted (e.g. :data:`THERMAL_ENCODINGS`).
    """
    buf = check_image(msg, allowed)
    dtype, channels = ENCODINGS[msg.encoding]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    rows = buf.reshape(h, step)[:, :w * channels * dtype.itemsize]
    big = bool(getattr(msg, "is_bigendian", False)) and dtype.itemsize > 1
    src_dtype = dtype.newbyteorder(">") if big else dtype.newbyteorder("<")
    # One copy (drops row padding, detaches from the message buffer), then a byte swap if needed.
    pixels = np.array(rows, copy=True, order="C").view(src_dtype).astype(dtype, copy=False)
    shape = (h, w, channels) if channels > 1 else (h, w)
    return pixels.reshape(shape)


def visible_to_numpy(msg: Any) -> np.ndarray:
    """Decode a visible image into what the matcher takes: uint8 BGR (HxWx3) or gray (HxW).

    ``rgb8`` is swapped to BGR; ``mono16`` is scaled robustly to 8 bits (percentiles, as for
    thermal counts) because 10/12-bit sensors rarely fill 16 bits.
    """
    img = image_to_numpy(msg, VISIBLE_ENCODINGS)
    if msg.encoding == "rgb8":
        return cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    if msg.encoding == "mono16":
        from .preprocess import normalize_thermal  # same robust 16->8 bit mapping
        return normalize_thermal(img) if min(img.shape) >= 16 else (img >> 8).astype(np.uint8)
    return img


def thermal_to_numpy(msg: Any) -> np.ndarray:
    """Decode a thermal image, keeping its raw values: HxW uint8, uint16 or float32."""
    return image_to_numpy(msg, THERMAL_ENCODINGS)


def numpy_to_image_fields(image: np.ndarray, encoding: str, bigendian: bool = False,
                          numpy_data: bool = False) -> Dict[str, Any]:
    """Fields of an Image message (without header) for ``image`` in ``encoding``.

    ``data`` is an ``array.array('B')`` (rclpy accepts it without a per-element check, which
    matters with ROS_PYTHON_CHECK_FIELDS=1) or, with ``numpy_data``, a uint8 array (rosbags).
    """
    if encoding not in ENCODINGS:
        raise InputError(f"unsupported image encoding '{encoding}'; supported: {', '.join(ENCODINGS)}")
    dtype, channels = ENCODINGS[encoding]
    image = np.asarray(image)
    expect_ndim = 3 if channels > 1 else 2
    if image.ndim == 3 and channels == 1 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim != expect_ndim or (channels > 1 and image.shape[2] != channels):
        raise InputError(f"array of shape {image.shape} cannot be encoded as {encoding}")
    if image.dtype != dtype:
        raise InputError(f"array of dtype {image.dtype} cannot be encoded as {encoding} ({dtype})")
    h, w = image.shape[:2]
    out = image.astype(dtype.newbyteorder(">" if bigendian else "<"), copy=False)
    raw = np.ascontiguousarray(out).tobytes()
    data: Any = np.frombuffer(raw, np.uint8) if numpy_data else array.array("B", raw)
    return {"height": h, "width": w, "encoding": encoding, "is_bigendian": int(bigendian),
            "step": w * channels * dtype.itemsize, "data": data}


def fill_image_msg(msg: Any, image: np.ndarray, encoding: str, bigendian: bool = False) -> Any:
    """Set the Image fields of ``msg`` (header untouched) from ``image``; returns ``msg``."""
    for key, value in numpy_to_image_fields(image, encoding, bigendian).items():
        setattr(msg, key, value)
    return msg
