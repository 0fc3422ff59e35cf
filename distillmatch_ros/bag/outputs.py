"""--out-bag: what the node would have published, recorded as a bag any rosbags user can decode.

Topics (stamped with the visible image's stamp, like the node's outputs):

* ``/distillmatch/correspondences``: ``distillmatch_msgs/msg/Correspondences`` (matches, the
  homography used for fusion, alignment and thermal states). The type's definition is read
  from the package's single ``Correspondences.msg`` and stored in the bag, so readers need
  neither our interface package nor ROS.
* ``/distillmatch/fused``: ``sensor_msgs/msg/Image`` bgr8, the fused frame.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .. import image_codec
from ..pipeline import ALIGNMENT_STATES, THERMAL_STATES
from .io import IMAGE_TYPE, BagError, BagWriter

CORRESPONDENCES_TYPE = "distillmatch_msgs/msg/Correspondences"
CORRESPONDENCES_TOPIC = "/distillmatch/correspondences"
FUSED_TOPIC = "/distillmatch/fused"


def correspondences_msgdef() -> str:
    """Text of Correspondences.msg: next to the package in a checkout, or shipped in share/."""
    import sys

    here = Path(__file__).resolve().parents[2]
    candidates = [here / "interfaces" / "distillmatch_msgs" / "msg" / "Correspondences.msg",
                  Path(sys.prefix) / "share" / "distillmatch_msgs" / "msg" / "Correspondences.msg",
                  Path(sys.prefix) / "share" / "distillmatch_ros" / "msg" / "Correspondences.msg"]
    for c in candidates:
        if c.exists():
            return c.read_text()
    raise BagError("Correspondences.msg not found (looked in " + ", ".join(map(str, candidates)) + ")")


class OutputBag:
    """Writer of the node's outputs for each processed pair (context manager)."""

    def __init__(self, path: str, storage: str = "sqlite3", backend: str = ""):
        self._w = BagWriter(path, storage)
        self._w.register_msg(CORRESPONDENCES_TYPE, correspondences_msgdef())
        self.backend = backend
        self.count = 0

    def __enter__(self) -> "OutputBag":
        self._w.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._w.__exit__(*exc)

    def write(self, out, frame_id: str = "", thermal_stamp_ns: Optional[int] = None,
              thermal_frame_id: str = "") -> None:
        """Record one :class:`~distillmatch_ros.pipeline.PairOutput`."""
        w = self._w
        stamp = int(out.stamp_ns)
        header = w.header(stamp, frame_id)
        res = out.result if out.matched else None
        n = len(res) if res is not None else 0

        def flat(a, dtype):
            return np.ascontiguousarray(np.asarray(a, dtype).reshape(-1)) if n else np.zeros(0, dtype)

        H = np.asarray(out.homography, np.float64).reshape(9) if out.homography is not None else np.zeros(9)
        inl = res.inliers if res is not None and len(res.inliers) == n else np.zeros(n, bool)
        Msg = w.msg_class(CORRESPONDENCES_TYPE)
        t_header = w.header(thermal_stamp_ns if thermal_stamp_ns is not None else stamp)
        msg = Msg(header=header, thermal_stamp=t_header.stamp, thermal_frame_id=thermal_frame_id,
                  visible_width=out.visible_size[0], visible_height=out.visible_size[1],
                  thermal_width=out.thermal_size[0], thermal_height=out.thermal_size[1],
                  matched=bool(out.matched),
                  visible_points=flat(res.visible_points if res else [], np.float32),
                  thermal_points=flat(res.thermal_points if res else [], np.float32),
                  scores=flat(res.scores if res else [], np.float32),
                  inliers=np.asarray(inl, np.uint8),
                  homography_valid=out.homography is not None, homography=H,
                  num_inliers=int(out.num_inliers),
                  alignment_state=ALIGNMENT_STATES.index(out.alignment),
                  thermal_state=THERMAL_STATES.index(out.thermal_state),
                  backend=self.backend, latency_ms=float(out.latency_ms))
        w.write(CORRESPONDENCES_TOPIC, CORRESPONDENCES_TYPE, stamp, msg)
        if out.fused is not None:
            Image = w.msg_class(IMAGE_TYPE)
            fields = image_codec.numpy_to_image_fields(out.fused, "bgr8", numpy_data=True)
            w.write(FUSED_TOPIC, IMAGE_TYPE, stamp, Image(header=header, **fields))
        self.count += 1
