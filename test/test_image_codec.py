"""Image <-> numpy conversion: every supported encoding, padded rows, big-endian, bad headers."""
import array
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distillmatch_ros import image_codec as ic
from distillmatch_ros.errors import InputError

SAMPLE = {np.dtype(np.uint8): lambda rng, shape: rng.integers(0, 256, shape, dtype=np.uint8),
          np.dtype(np.uint16): lambda rng, shape: rng.integers(0, 65536, shape, dtype=np.uint16),
          np.dtype(np.float32): lambda rng, shape: rng.normal(300, 20, shape).astype(np.float32)}


def encode_by_hand(img, encoding, pad, big):
    """Independent reference encoder: row by row, explicit byte order, ``pad`` bytes per row."""
    dtype, _ = ic.ENCODINGS[encoding]
    order = ">" if big else "<"
    rows = [img[r].astype(dtype.newbyteorder(order)).tobytes() + b"\xab" * pad for r in range(img.shape[0])]
    return SimpleNamespace(height=img.shape[0], width=img.shape[1], encoding=encoding,
                           is_bigendian=int(big), step=len(rows[0]), data=b"".join(rows))


@settings(max_examples=150, deadline=None)
@given(encoding=st.sampled_from(sorted(ic.ENCODINGS)), h=st.integers(1, 12), w=st.integers(1, 12),
       pad=st.integers(0, 9), big=st.booleans(), seed=st.integers(0, 2**32 - 1),
       container=st.sampled_from(["bytes", "array", "numpy"]))
def test_decode_matches_reference_encoder(encoding, h, w, pad, big, seed, container):
    dtype, ch = ic.ENCODINGS[encoding]
    shape = (h, w, ch) if ch > 1 else (h, w)
    img = SAMPLE[dtype](np.random.default_rng(seed), shape)
    msg = encode_by_hand(img, encoding, pad, big)
    msg.data = {"bytes": msg.data, "array": array.array("B", msg.data),
                "numpy": np.frombuffer(msg.data, np.uint8)}[container]
    out = ic.image_to_numpy(msg)
    assert out.dtype == dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, img)
    # The result owns its memory: changing it must not change the message.
    before = bytes(msg.data)
    out[...] = 0
    assert bytes(msg.data) == before


@settings(max_examples=80, deadline=None)
@given(encoding=st.sampled_from(sorted(ic.ENCODINGS)), h=st.integers(1, 9), w=st.integers(1, 9),
       big=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_fields_roundtrip(encoding, h, w, big, seed):
    dtype, ch = ic.ENCODINGS[encoding]
    img = SAMPLE[dtype](np.random.default_rng(seed), (h, w, ch) if ch > 1 else (h, w))
    fields = ic.numpy_to_image_fields(img, encoding, bigendian=big)
    assert isinstance(fields["data"], array.array) and fields["data"].typecode == "B"
    assert fields["step"] * h == len(fields["data"])
    np.testing.assert_array_equal(ic.image_to_numpy(SimpleNamespace(**fields)), img)


@settings(max_examples=300, deadline=None)
@given(encoding=st.sampled_from(sorted(ic.ENCODINGS) + ["bgra8", "", "yuv422", "MONO8"]),
       h=st.integers(-2, 20), w=st.integers(-2, 20), step=st.integers(-4, 100),
       nbytes=st.integers(0, 2000), big=st.booleans())
def test_malformed_headers_give_input_error_only(encoding, h, w, step, nbytes, big):
    msg = SimpleNamespace(height=h, width=w, encoding=encoding, is_bigendian=big, step=step,
                          data=bytes(nbytes))
    try:
        out = ic.image_to_numpy(msg)
    except InputError:
        return
    dtype, ch = ic.ENCODINGS[encoding]
    assert out.shape[:2] == (h, w) and step * h == nbytes and step >= w * ch * dtype.itemsize


@pytest.mark.parametrize("msg, words", [
    (SimpleNamespace(height=4, width=4, encoding="bgra8", is_bigendian=0, step=16, data=bytes(64)),
     "unsupported image encoding 'bgra8'"),
    (SimpleNamespace(height=4, width=4, encoding="mono8", is_bigendian=0, step=4, data=bytes(15)),
     "does not match step*height"),
    (SimpleNamespace(height=4, width=4, encoding="mono16", is_bigendian=0, step=4, data=bytes(16)),
     "step 4 is smaller"),
    (SimpleNamespace(height=0, width=0, encoding="mono8", is_bigendian=0, step=0, data=b""),
     "empty image"),
])
def test_clear_messages(msg, words):
    with pytest.raises(InputError, match=words.replace("*", r"\*").replace("(", r"\(")):
        ic.image_to_numpy(msg)


def test_role_restrictions_and_conversions():
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[..., 0] = 200  # red in RGB
    msg = SimpleNamespace(**ic.numpy_to_image_fields(rgb, "rgb8"))
    assert ic.visible_to_numpy(msg)[0, 0].tolist() == [0, 0, 200]  # BGR
    with pytest.raises(InputError, match="unsupported"):
        ic.thermal_to_numpy(msg)  # rgb8 is not a thermal encoding
    f = SimpleNamespace(**ic.numpy_to_image_fields(np.ones((20, 20), np.float32), "32FC1"))
    with pytest.raises(InputError, match="unsupported"):
        ic.visible_to_numpy(f)
    ramp = (np.arange(400, dtype=np.uint16).reshape(20, 20) * 10 + 1000)
    m16 = ic.visible_to_numpy(SimpleNamespace(**ic.numpy_to_image_fields(ramp, "mono16")))
    assert m16.dtype == np.uint8 and m16.min() == 0 and m16.max() == 255


def test_rclpy_message_roundtrip(monkeypatch):
    monkeypatch.setenv("ROS_PYTHON_CHECK_FIELDS", "1")
    Image = pytest.importorskip("sensor_msgs.msg").Image
    img = np.random.default_rng(0).integers(0, 65536, (5, 7), dtype=np.uint16)
    msg = ic.fill_image_msg(Image(), img, "16UC1", bigendian=True)
    assert msg.is_bigendian and msg.step == 14
    np.testing.assert_array_equal(ic.thermal_to_numpy(msg), img)


# -- CompressedImage ------------------------------------------------------------------------------

def _smooth(h, w, ch=0, dtype=np.uint8, seed=0):
    """A smooth image (what cameras see; JPEG keeps it within a few grey levels)."""
    import cv2
    rng = np.random.default_rng(seed)
    small = rng.random((h // 8, w // 8) + ((ch,) if ch else ())).astype(np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    top = np.iinfo(dtype).max if dtype == np.uint8 else 60000
    return np.clip(big * top, 0, top).astype(dtype)


def _cmsg(fmt, data):
    return SimpleNamespace(format=fmt, data=data)


def test_compressed_formats_as_image_transport_writes_them():
    cases = [("bgr8", _smooth(48, 64, 3), "bgr8; jpeg compressed bgr8"),
             ("rgb8", _smooth(48, 64, 3), "rgb8; jpeg compressed bgr8"),
             ("mono8", _smooth(48, 64), "mono8; jpeg compressed mono8"),
             ("mono16", _smooth(48, 64, dtype=np.uint16), "mono16; png compressed mono16"),
             ("16UC1", _smooth(48, 64, dtype=np.uint16), "16UC1; png compressed mono16")]
    for enc, img, fmt in cases:
        got, payload = ic.encode_compressed(img, enc)
        assert got == fmt
        assert payload[:2] == (b"\x89P" if "png" in fmt else b"\xff\xd8")
    assert ic.parse_compressed_format("bgr8; jpeg compressed bgr8") == ("bgr8", "jpeg", "bgr8")
    assert ic.parse_compressed_format("png") == ("", "png", "")
    assert ic.parse_compressed_format("JPEG") == ("", "jpeg", "")


def test_16bit_png_thermal_stays_16bit_and_exact():
    counts = _smooth(40, 56, dtype=np.uint16, seed=3) + 7000
    for enc in ("mono16", "16UC1"):
        fmt, payload = ic.encode_compressed(counts, enc)
        for data in (payload, array.array("B", payload), np.frombuffer(payload, np.uint8)):  # bytes, rclpy, rosbags
            out = ic.thermal_to_numpy(_cmsg(fmt, data))
            assert out.dtype == np.uint16
            np.testing.assert_array_equal(out, counts)
    fmt, payload = ic.encode_compressed((counts >> 8).astype(np.uint8), "mono8", "png")
    assert ic.thermal_to_numpy(_cmsg(fmt, payload)).dtype == np.uint8


def test_jpeg_visible_decodes_to_bgr_in_both_channel_orders():
    bgr = _smooth(64, 80, 3, seed=4)
    fmt, payload = ic.encode_compressed(bgr, "bgr8")
    out = ic.visible_to_numpy(_cmsg(fmt, payload))
    assert out.shape == bgr.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - bgr).mean() < 3  # quality 95
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    fmt, payload = ic.encode_compressed(rgb, "rgb8")   # the plugin compresses it as BGR
    assert np.abs(ic.visible_to_numpy(_cmsg(fmt, payload)).astype(int) - bgr).mean() < 3
    # a publisher that compressed RGB pixels as they were says so ("compressed rgb8")
    import cv2
    ok, raw_rgb = cv2.imencode(".png", rgb)
    out = ic.visible_to_numpy(_cmsg("rgb8; png compressed rgb8", raw_rgb.tobytes()))
    np.testing.assert_array_equal(out, bgr)
    ok, plain = cv2.imencode(".png", bgr)
    np.testing.assert_array_equal(ic.visible_to_numpy(_cmsg("png", plain.tobytes())), bgr)
    m16 = _smooth(40, 48, dtype=np.uint16)
    fmt, payload = ic.encode_compressed(m16, "mono16")
    v = ic.visible_to_numpy(_cmsg(fmt, payload))
    assert v.dtype == np.uint8 and v.shape == m16.shape and v.max() == 255


def test_thermal_grey_saved_as_colour_jpeg_becomes_one_channel():
    import cv2
    grey = _smooth(32, 40, seed=5)
    ok, payload = cv2.imencode(".jpg", cv2.merge([grey, grey, grey]))
    out = ic.thermal_to_numpy(_cmsg("jpeg", payload.tobytes()))
    assert out.shape == grey.shape and np.abs(out.astype(int) - grey).mean() < 3


@pytest.mark.parametrize("fmt, data, words", [
    ("16UC1; compressedDepth png", b"\x00" * 12 + b"\x89PNG", "compressedDepth images are not supported"),
    ("32FC1; compressedDepth rvl", b"\x00" * 40, "compressedDepth"),
    ("h264", b"\x00\x00\x00\x01", "unsupported compressed image format 'h264'"),
    ("", b"\xff\xd8", "unsupported compressed image format"),
    ("mono8; jpeg compressed mono8", b"", "empty compressed image"),
    ("mono8; jpeg compressed mono8", b"\xff\xd8\xff\xe0garbage" * 10, "cannot decode jpeg image"),
    ("mono16; png compressed mono16", b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, "cannot decode png image"),
])
def test_bad_compressed_payloads_give_clear_input_errors(fmt, data, words):
    for decode in (ic.visible_to_numpy, ic.thermal_to_numpy):
        with pytest.raises(InputError, match=words):
            decode(_cmsg(fmt, data))


def test_compressed_role_restrictions():
    fmt, payload = ic.encode_compressed(_smooth(16, 16, 3), "bgr8")
    with pytest.raises(InputError, match="unsupported image encoding 'bgr8'"):
        ic.thermal_to_numpy(_cmsg(fmt, payload))   # a colour camera is not a thermal camera
    with pytest.raises(InputError, match="unsupported image encoding 'bgr8'"):
        ic.check_message(_cmsg(fmt, payload), ic.THERMAL_ENCODINGS)  # cheap check, no decoding
    ic.check_message(_cmsg(fmt, b"not decoded here"), ic.VISIBLE_ENCODINGS)
    with pytest.raises(InputError, match="JPEG holds 8 bits"):
        ic.encode_compressed(np.zeros((4, 4), np.uint16), "mono16", "jpeg")
    with pytest.raises(InputError, match="compressed transport"):
        ic.encode_compressed(np.zeros((4, 4), np.float32), "32FC1")


def test_rclpy_compressed_message(monkeypatch):
    monkeypatch.setenv("ROS_PYTHON_CHECK_FIELDS", "1")
    CompressedImage = pytest.importorskip("sensor_msgs.msg").CompressedImage
    counts = _smooth(24, 32, dtype=np.uint16, seed=6)
    msg = CompressedImage()
    msg.format, payload = ic.encode_compressed(counts, "mono16")
    msg.data = array.array("B", payload)
    assert ic.is_compressed(msg)
    np.testing.assert_array_equal(ic.thermal_to_numpy(msg), counts)
