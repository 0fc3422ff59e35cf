"""--out-bag: what the node would have published, recorded as a bag any rosbags user can decode.

Topics (stamped with the visible image's stamp, like the node's outputs):

* ``/distillmatch/correspondences``: ``distillmatch_msgs/msg/Correspondences`` (matches, the
  homography used for fusion, alignment and thermal states), filled by the node's own
  :mod:`distillmatch_ros.correspondences`. The type's definition is stored in the bag, so
  readers need neither our interface package nor ROS.
* ``/distillmatch/fused/image``: ``sensor_msgs/msg/Image`` bgr8, the fused frame.
"""
from __future__ import annotations

from typing import Optional

from .. import correspondences, image_codec
from .io import IMAGE_TYPE, BagError, BagWriter

CORRESPONDENCES_TYPE = correspondences.MSG_TYPE
CORRESPONDENCES_TOPIC = "/distillmatch/correspondences"
FUSED_TOPIC = "/distillmatch/fused/image"  # the node's relative names in a /distillmatch namespace


class OutputBag:
    """Writer of the node's outputs for each processed pair (context manager)."""

    def __init__(self, path: str, storage: str = "sqlite3"):
        self._w = BagWriter(path, storage)
        try:
            correspondences.register_rosbags(self._w.types)
        except FileNotFoundError as e:
            raise BagError(f"cannot write --out-bag: {e}") from None

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
        t_stamp = w.header(thermal_stamp_ns if thermal_stamp_ns is not None else stamp).stamp
        fields = correspondences.correspondence_fields(out, numpy_arrays=True)
        msg = w.msg_class(CORRESPONDENCES_TYPE)(header=header, thermal_stamp=t_stamp,
                                                  thermal_frame_id=thermal_frame_id, **fields)
        w.write(CORRESPONDENCES_TOPIC, CORRESPONDENCES_TYPE, stamp, msg)
        if out.fused is not None:
            Image = w.msg_class(IMAGE_TYPE)
            fields = image_codec.numpy_to_image_fields(out.fused, "bgr8", numpy_data=True)
            w.write(FUSED_TOPIC, IMAGE_TYPE, stamp, Image(header=header, **fields))
