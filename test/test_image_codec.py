"""Image <-> numpy conversion: every supported encoding, padded rows, big-endian, bad headers."""
import array
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

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
