"""Reading and writing ROS 2 bags (sqlite3 and mcap storage) with ``rosbags`` only.

Why rosbags: it is pure Python, needs no ROS install and no rclpy, and reads both storage
plugins; its CDR decodes the same as rclpy's. Every failure to open or decode a recording is
turned into a :class:`BagError` that names the bag, the topic and what to do.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from ..errors import DistillMatchError

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"  # image_transport's compressed plugin
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}


class BagError(DistillMatchError, RuntimeError):
    """A recording cannot be used: missing, corrupt, wrong topic or type, bad ground truth."""


def typestore():
    """Message types of the ROS distro the package targets (Kilted); bags bring their own too."""
    return get_typestore(Stores.ROS2_KILTED)


def storage_of(path: str) -> str:
    """'sqlite3' or 'mcap', from the files of a bag folder (or a bare .mcap / .db3 file)."""
    p = Path(path)
    files = [p] if p.is_file() else list(p.glob("*"))
    if any(f.suffix == ".mcap" for f in files):
        return "mcap"
    if any(f.suffix == ".db3" for f in files):
        return "sqlite3"
    return "unknown"


class BagReader:
    """Open a bag for reading image topics; use as a context manager.

    ``messages(topics)`` yields ``(topic, log_time_ns, msg)`` in log-time order with the
    messages decoded (rosbags objects, which the image codec accepts as they are).
    """

    def __init__(self, path: str):
        self.path = str(path)
        if not os.path.exists(self.path):
            raise BagError(f"bag not found: {self.path}")
        self.storage = storage_of(self.path)
        try:  # rosbags checks the folder here already (FileNotFoundError about metadata.yaml, ...)
            self._reader = AnyReader([Path(self.path)], default_typestore=typestore())
        except (AnyReaderError, Exception) as e:  # noqa: BLE001 - several types for not-a-bag
            raise BagError(f"{self.path} is not a ROS 2 bag ({str(e).rstrip('.')}). A bag is a folder with "
                           "metadata.yaml and .db3/.mcap files, or a single .mcap file") from None

    def __enter__(self) -> "BagReader":
        try:
            self._reader.open()
        except (AnyReaderError, Exception) as e:  # rosbags raises several types for bad files
            raise BagError(f"cannot open bag {self.path} ({self.storage}): {str(e).rstrip('.')}. "
                           "Is it a complete ROS 2 bag folder (metadata.yaml + .db3/.mcap)?") from e
        return self

    def __exit__(self, *exc) -> None:
        self._reader.close()

    def topics(self) -> Dict[str, Tuple[str, int]]:
        """topic -> (message type, message count)."""
        out: Dict[str, Tuple[str, int]] = {}
        for c in self._reader.connections:
            typ, n = out.get(c.topic, (c.msgtype, 0))
            out[c.topic] = (typ, n + c.msgcount)
        return out

    def image_topic(self, name: str) -> str:
        """The topic to read for camera topic ``name``: ``name`` itself when it holds Image or
        CompressedImage messages, else ``name/compressed`` when only image_transport's
        compressed topic was recorded. Fails early, listing what the bag has."""
        have = self.topics()
        listing = ", ".join(f"{t} [{m}]" for t, (m, _) in sorted(have.items())) or "no topics"
        if name not in have and have.get(f"{name.rstrip('/')}/compressed", ("",))[0] == COMPRESSED_TYPE:
            name = f"{name.rstrip('/')}/compressed"
        if name not in have:
            raise BagError(f"topic {name!r} is not in bag {self.path}; it has: {listing}")
        if have[name][0] not in IMAGE_TYPES:
            raise BagError(f"topic {name!r} in {self.path} is {have[name][0]}, expected "
                           f"{' or '.join(IMAGE_TYPES)}")
        return name

    def require_image_topics(self, names: Sequence[str]) -> List[str]:
        """:meth:`image_topic` for each name: the topics to read, in order."""
        return [self.image_topic(n) for n in names]

    def count(self, names: Sequence[str]) -> int:
        have = self.topics()
        return sum(have[n][1] for n in names if n in have)

    def messages(self, names: Sequence[str]) -> Iterator[Tuple[str, int, object]]:
        conns = [c for c in self._reader.connections if c.topic in set(names)]
        it = self._reader.messages(connections=conns)
        while True:
            try:
                conn, stamp, raw = next(it)
            except StopIteration:
                return
            except Exception as e:
                raise BagError(f"bag {self.path} is corrupt or truncated while reading: {e}") from e
            try:
                msg = self._reader.deserialize(raw, conn.msgtype)
            except Exception as e:
                raise BagError(f"cannot decode a {conn.msgtype} message on {conn.topic} at "
                               f"{stamp} ns in {self.path}: {e}") from e
            yield conn.topic, stamp, msg


class BagWriter:
    """Write messages to a new bag folder in sqlite3 or mcap storage (context manager).

    Message types not in the Kilted typestore (e.g. the correspondences message) must be
    registered in ``self.types`` first; their definition is then stored in the bag, so that
    any rosbags reader decodes them without our package.
    """

    def __init__(self, path: str, storage: str = "sqlite3"):
        if storage not in STORAGES:
            raise BagError(f"unknown storage {storage!r}; use one of {sorted(STORAGES)}")
        if os.path.exists(path):
            raise BagError(f"output bag {path} already exists; remove it or choose another path")
        self.path, self.storage = str(path), storage
        self.types = typestore()
        self._writer = Writer(self.path, version=9, storage_plugin=STORAGES[storage])
        self._conns: Dict[str, object] = {}

    def __enter__(self) -> "BagWriter":
        self._writer.open()
        return self

    def __exit__(self, *exc) -> None:
        self._writer.close()

    def msg_class(self, msgtype: str):
        return self.types.types[msgtype]

    def write(self, topic: str, msgtype: str, stamp_ns: int, msg) -> None:
        if topic not in self._conns:
            self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=self.types)
        self._writer.write(self._conns[topic], int(stamp_ns), self.types.serialize_cdr(msg, msgtype))

    def header(self, stamp_ns: int, frame_id: str = ""):
        """A std_msgs/Header for a stamp in nanoseconds."""
        Header = self.types.types["std_msgs/msg/Header"]
        Time = self.types.types["builtin_interfaces/msg/Time"]
        return Header(stamp=Time(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000)),
                      frame_id=frame_id)


def list_bag_files(path: str) -> List[str]:
    """The storage files of a bag folder (for tests that damage them on purpose)."""
    return sorted(str(f) for f in Path(path).glob("*") if f.suffix in (".db3", ".mcap"))
