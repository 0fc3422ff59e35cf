"""sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge (not installable here).

Duck-typed: any object with ``height, width, encoding, is_bigendian, step, data`` (Image) or
``format, data`` (CompressedImage, JPEG/PNG from image_transport's compressed plugin) works, so
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
    """Decode a visible Image or CompressedImage into what the matcher takes: uint8 BGR
    (HxWx3) or gray (HxW).

    ``rgb8`` is swapped to BGR; ``mono16`` is scaled robustly to 8 bits (percentiles, as for
    thermal counts) because 10/12-bit sensors rarely fill 16 bits.
    """
    if is_compressed(msg):
        img = compressed_to_numpy(msg, VISIBLE_ENCODINGS)
        if img.ndim == 3 and img.dtype != np.uint8:
            raise InputError(f"16-bit colour images are not supported (format '{msg.format}'); "
                             "send bgr8, rgb8, mono8 or mono16")
        return _mono16_to_8(img) if img.dtype == np.uint16 else img
    img = image_to_numpy(msg, VISIBLE_ENCODINGS)
    if msg.encoding == "rgb8":
        return cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    if msg.encoding == "mono16":
        return _mono16_to_8(img)
    return img


def _mono16_to_8(img: np.ndarray) -> np.ndarray:
    from .preprocess import normalize_thermal  # same robust 16->8 bit mapping as thermal counts
    return normalize_thermal(img) if min(img.shape) >= 16 else (img >> 8).astype(np.uint8)


def thermal_to_numpy(msg: Any) -> np.ndarray:
    """Decode a thermal Image or CompressedImage, keeping its raw values: HxW uint8, uint16
    (16-bit PNG included) or float32."""
    if is_compressed(msg):
        img = compressed_to_numpy(msg, THERMAL_ENCODINGS)
        if img.ndim == 3:  # a grey frame saved as colour JPEG by some drivers
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        return img
    return image_to_numpy(msg, THERMAL_ENCODINGS)


class ImageRejected(InputError):
    """One camera's image of a pair could not be decoded; ``stream`` says which."""

    def __init__(self, stream: str, reason: InputError):
        super().__init__(f"{stream} image rejected: {reason}")
        self.stream = stream


def decode_pair(visible_msg: Any, thermal_msg: Any) -> Tuple[np.ndarray, np.ndarray]:
    """The (visible, thermal) images of a synchronized pair of Image or CompressedImage
    messages, as the matcher takes them; the node and bag-eval both decode through here.
    Raises :class:`ImageRejected`."""
    images = []
    for stream, decode, msg in (("visible", visible_to_numpy, visible_msg),
                                ("thermal", thermal_to_numpy, thermal_msg)):
        try:
            images.append(decode(msg))
        except InputError as exc:
            raise ImageRejected(stream, exc) from exc
    return images[0], images[1]


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


# -- sensor_msgs/CompressedImage (image_transport's "compressed" plugin) -------------------------
#
# The plugin writes ``format`` as "<original encoding>; <jpeg|png> compressed <encoding of the
# compressed pixels>", e.g. "bgr8; jpeg compressed bgr8", "rgb8; jpeg compressed bgr8" (it
# compresses colour as BGR) or "mono16; png compressed mono16"; older publishers write only
# "jpeg" or "png". The "compressedDepth" plugin writes "16UC1; compressedDepth png" and puts a
# private header before the PNG: it is refused, with what to do instead.

#: codecs OpenCV decodes that image_transport's compressed plugin writes
COMPRESSED_CODECS = ("jpeg", "png", "tiff")
_CODEC_ALIASES = {"jpg": "jpeg", "tif": "tiff"}


def is_compressed(msg: Any) -> bool:
    """True for a CompressedImage-like message (``format`` + ``data``, no ``encoding``)."""
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def parse_compressed_format(fmt: str) -> Tuple[str, str, str]:
    """``format`` -> (original encoding or "", codec, encoding of the compressed pixels or "").

    Raises InputError for compressedDepth payloads and codecs this package cannot decode.
    """
    text = str(fmt).strip()
    original, _, rest = text.rpartition(";") if ";" in text else ("", "", text)
    original, rest = original.strip(), rest.strip()
    if "compresseddepth" in text.lower():
        raise InputError(f"compressedDepth images are not supported (format '{text}'): they are depth "
                         "maps with a private header; publish the camera through the 'compressed' "
                         "transport (png keeps 16 bits) or raw")
    words = rest.split()
    codec = _CODEC_ALIASES.get(words[0].lower(), words[0].lower()) if words else ""
    if codec not in COMPRESSED_CODECS:
        raise InputError(f"unsupported compressed image format '{text}'; supported codecs: "
                         f"{', '.join(COMPRESSED_CODECS)} (image_transport's compressed plugin)")
    target = words[2] if len(words) >= 3 and words[1].lower() == "compressed" else ""
    return original, codec, target


def check_compressed(msg: Any, allowed: Tuple[str, ...]) -> np.ndarray:
    """Cheap checks of a CompressedImage (format, original encoding, non-empty data) without
    decoding; returns the payload as flat uint8. Decoding is left to the worker thread."""
    original, codec, _ = parse_compressed_format(getattr(msg, "format", ""))
    if original and original not in allowed:
        raise InputError(f"unsupported image encoding '{original}' in compressed format "
                         f"'{msg.format}'; supported: {', '.join(allowed)}")
    buf = _data_buffer(msg.data)
    if buf.size == 0:
        raise InputError(f"empty compressed image (format '{msg.format}')")
    return buf


def compressed_to_numpy(msg: Any, allowed: Tuple[str, ...] = tuple(ENCODINGS)) -> np.ndarray:
    """Decode a CompressedImage: HxW uint8/uint16 (16-bit PNG stays 16-bit) or HxWx3 BGR uint8/16."""
    buf = check_compressed(msg, allowed)
    original, codec, target = parse_compressed_format(msg.format)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise InputError(f"cannot decode {codec} image ({buf.size} bytes, format '{msg.format}'): "
                         "corrupt or truncated payload")
    if img.shape[0] * img.shape[1] > MAX_PIXELS:
        raise InputError(f"image too large ({img.shape[1]}x{img.shape[0]}); at most {MAX_PIXELS} pixels")
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 3 and target.startswith("rgb"):  # pixels were compressed in RGB order
        img = img[..., ::-1]
    if img.dtype not in (np.uint8, np.uint16):
        raise InputError(f"decoded {codec} image has dtype {img.dtype}; expected 8 or 16 bits")
    return np.ascontiguousarray(img)


def encode_compressed(image: np.ndarray, encoding: str, codec: str = "", jpeg_quality: int = 95,
                      png_level: int = 3) -> Tuple[str, bytes]:
    """(format, payload) as image_transport's compressed plugin writes them for ``image``.

    ``image`` is what an Image message of ``encoding`` holds (bgr8/rgb8/mono8/mono16/16UC1).
    ``codec``: ``jpeg`` (8-bit only) or ``png``; default jpeg for 8 bits, png for 16. The plugin's
    defaults are quality 95 and PNG level 3. Used by ``make-bag --compressed`` and tests.
    """
    if encoding not in ENCODINGS or encoding == "32FC1":
        raise InputError(f"encoding '{encoding}' cannot be sent through the compressed transport; "
                         "use bgr8, rgb8, mono8, mono16 or 16UC1")
    dtype, channels = ENCODINGS[encoding]
    image = np.asarray(image)
    if image.dtype != dtype or image.ndim != (3 if channels > 1 else 2):
        raise InputError(f"array {image.shape} {image.dtype} is not a {encoding} image")
    codec = codec or ("png" if dtype.itemsize == 2 else "jpeg")
    if codec == "jpeg" and dtype.itemsize != 1:
        raise InputError(f"JPEG holds 8 bits; compress {encoding} as png")
    if channels == 3:
        target = "bgr8"
        pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if encoding == "rgb8" else image
    else:
        target = "mono16" if dtype.itemsize == 2 else "mono8"
        pixels = image
    if codec == "jpeg":
        ok, payload = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    elif codec == "png":
        ok, payload = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, int(png_level)])
    else:
        raise InputError(f"unsupported codec '{codec}'; use jpeg or png")
    if not ok:
        raise InputError(f"OpenCV could not encode a {encoding} image as {codec}")
    return f"{encoding}; {codec} compressed {target}", payload.tobytes()


def check_message(msg: Any, allowed: Tuple[str, ...]) -> None:
    """Subscription-callback check of an Image or a CompressedImage (no pixel decoding)."""
    if is_compressed(msg):
        check_compressed(msg, allowed)
    else:
        check_image(msg, allowed)
