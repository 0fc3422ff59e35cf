"""Approximate-time pairing of two camera streams (plain Python, no rclpy).

Written here because ``message_filters`` is not published as a PyPI wheel, and the node must
run from the ROS 2 PyPI wheels (README: installation). Semantics follow message_filters' ApproximateTime
policy, specialised to two streams:

* each stream has a queue of at most ``queue_size`` messages (the oldest is dropped first);
* a pair is emitted as soon as it is known to be the best one: no message that can still
  arrive would pair more closely with either member;
* each message is used at most once, and a pair's stamps never differ by more than ``slop``
  seconds (like ``slop`` in message_filters' Python ``ApproximateTimeSynchronizer``);
* a stream's next stamp can be bounded from below (``set_inter_message_lower_bound``, as in the
  C++ policy, or ``adaptive_bound``: half the shortest recent period), which lets a pair go out
  without waiting for the next frame of a slow camera (a 9 Hz thermal camera would otherwise
  add up to 111 ms of latency);
* stamps must increase per stream; an older stamp is dropped as ``out_of_order``, except that a
  jump back by more than ``reset_after`` seconds (a bag played in a loop, a clock reset) clears
  both queues (``reset``) and starts again.

Unlike message_filters it reports what it drops: every message received is eventually either
in a pair, dropped with a reason, or still queued, so ``received == paired + dropped + queued``
per stream holds at all times (:meth:`ApproximateTimeSynchronizer.stats`).
"""
from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

from .options import Option, by_name, defaults

#: The pairing settings (the node's parameters of the same names; bag-eval's --queue-size, --slop).
OPTIONS: Tuple[Option, ...] = (
    Option("queue_size", 10, "Approximate-time sync: messages kept per camera", range=(1, 100)),
    Option("slop", 0.025, "Approximate-time sync: largest stamp difference in a pair [s]", range=(0.0, 1.0)),
)
DEFAULTS: Dict[str, Any] = defaults(OPTIONS)
_SPECS = by_name(OPTIONS)

#: reasons a message is dropped
DROP_REASONS = ("unmatched", "superseded", "queue_overflow", "out_of_order", "reset")

Pair = Tuple[Any, Any, int, int]  # (msg_0, msg_1, stamp_ns_0, stamp_ns_1)


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (rclpy or rosbags: ``sec``, ``nanosec``) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def header_stamp_ns(msg: Any) -> int:
    """Stamp of a message with a std_msgs/Header, in nanoseconds."""
    return stamp_to_ns(msg.header.stamp)


class ApproximateTimeSynchronizer:
    """Pairs messages of two streams whose stamps are within ``slop`` seconds.

    Feed it with :meth:`add` (from any thread); pairs are returned and also passed to callbacks
    registered with :meth:`register_callback` as ``cb(msg_0, msg_1)``.
    """

    def __init__(self, queue_size: int = DEFAULTS["queue_size"], slop: float = DEFAULTS["slop"],
                 streams: Sequence[str] = ("visible", "thermal"), reset_after: float = 1.0,
                 adaptive_bound: bool = True):
        if len(streams) != 2:
            raise ValueError("this synchronizer pairs exactly two streams")
        self.streams = tuple(streams)
        self._lock = threading.Lock()
        self._queues: Tuple[Deque[Tuple[int, Any]], Deque[Tuple[int, Any]]] = (deque(), deque())
        self._last: List[Optional[int]] = [None, None]
        self._callbacks: List[Callable[[Any, Any], None]] = []
        self.queue_size = queue_size
        self.slop = slop
        self.reset_after = reset_after
        self.adaptive_bound = adaptive_bound
        self._bound_ns = [0, 0]
        self._periods: Tuple[Deque[int], Deque[int]] = (deque(maxlen=16), deque(maxlen=16))
        self.received = [0, 0]
        self.paired = 0
        self.dropped: Tuple[Counter, Counter] = (Counter(), Counter())

    # -- configuration (may change at run time) -------------------------------------------
    @property
    def queue_size(self) -> int:
        return self._queue_size

    @queue_size.setter
    def queue_size(self, value: int) -> None:
        self._queue_size = _SPECS["queue_size"].check(value)

    @property
    def slop(self) -> float:
        return self._slop_ns / 1e9

    @slop.setter
    def slop(self, value: float) -> None:
        _SPECS["slop"].check(value)
        self._slop_ns = int(round(float(value) * 1e9))

    def set_inter_message_lower_bound(self, stream: Any, seconds: float) -> None:
        """Promise that ``stream``'s stamps are at least ``seconds`` apart (0: no promise)."""
        i = self.streams.index(stream) if isinstance(stream, str) else int(stream)
        self._bound_ns[i] = int(round(max(0.0, seconds) * 1e9))

    def _lower_bound_ns(self, i: int) -> int:
        bound = self._bound_ns[i]
        if self.adaptive_bound and len(self._periods[i]) >= 4:
            bound = max(bound, min(self._periods[i]) // 2)
        return bound

    def register_callback(self, cb: Callable[[Any, Any], None]) -> None:
        """Call ``cb(msg_0, msg_1)`` for every pair (outside the internal lock)."""
        self._callbacks.append(cb)

    # -- input --------------------------------------------------------------------------
    def add(self, stream: Any, msg: Any, stamp_ns: Optional[int] = None) -> List[Pair]:
        """Queue ``msg`` on ``stream`` (index 0/1 or its name); returns the pairs completed.

        ``stamp_ns`` defaults to the message's ``header.stamp``.
        """
        i = self.streams.index(stream) if isinstance(stream, str) else int(stream)
        if i not in (0, 1):
            raise ValueError(f"unknown stream {stream!r}")
        t = header_stamp_ns(msg) if stamp_ns is None else int(stamp_ns)
        with self._lock:
            self.received[i] += 1
            last = self._last[i]
            if last is not None and t <= last:
                if last - t > self.reset_after * 1e9:
                    self._reset_locked()
                else:
                    self.dropped[i]["out_of_order"] += 1
                    return []
            if self._last[i] is not None:
                self._periods[i].append(t - self._last[i])
            self._last[i] = t
            q = self._queues[i]
            q.append((t, msg))
            while len(q) > self._queue_size:
                q.popleft()
                self.dropped[i]["queue_overflow"] += 1
            pairs = self._match_locked()
        for m0, m1, _, _ in pairs:
            for cb in self._callbacks:
                cb(m0, m1)
        return pairs

    def reset(self) -> None:
        """Forget queued messages (counted as dropped, reason ``reset``) and last stamps."""
        with self._lock:
            self._reset_locked()

    def _reset_locked(self) -> None:
        for i in (0, 1):
            self.dropped[i]["reset"] += len(self._queues[i])
            self._queues[i].clear()
            self._last[i] = None
            self._periods[i].clear()

    def _match_locked(self) -> List[Pair]:
        """Emit every pair that is already known to be optimal; drop hopeless heads."""
        pairs: List[Pair] = []
        qs = self._queues
        while qs[0] and qs[1]:
            t0, t1 = qs[0][0][0], qs[1][0][0]
            old = 0 if t0 <= t1 else 1  # the older head can only pair with the other head or later
            new = 1 - old
            t_old, t_new = qs[old][0][0], qs[new][0][0]
            gap = t_new - t_old
            if gap > self._slop_ns:
                qs[old].popleft()  # every later partner is even further away
                self.dropped[old]["unmatched"] += 1
                continue
            if gap > 0:
                # t_new is the best partner of t_old; does t_new have a closer partner on old's
                # stream? Only a later message there can be closer: known, or still to come.
                if len(qs[old]) < 2:
                    # The next one comes at t_old + bound or later; it is closer to t_new only
                    # if it comes before t_new + gap.
                    if self._lower_bound_ns(old) < 2 * gap:
                        break  # wait for the next message of that stream
                elif abs(qs[old][1][0] - t_new) < gap:
                    qs[old].popleft()
                    self.dropped[old]["superseded"] += 1
                    continue
            s0, m0 = qs[0].popleft()
            s1, m1 = qs[1].popleft()
            self.paired += 1
            pairs.append((m0, m1, s0, s1))
        return pairs

    # -- reporting ----------------------------------------------------------------------
    def queued(self) -> Tuple[int, int]:
        """Messages waiting in each stream's queue."""
        with self._lock:
            return len(self._queues[0]), len(self._queues[1])

    def newest_stamps_ns(self) -> Tuple[Optional[int], Optional[int]]:
        """Last accepted stamp per stream (to explain streams that never synchronize)."""
        with self._lock:
            return self._last[0], self._last[1]

    def stats(self) -> Dict[str, Any]:
        """Counters per stream: received, paired, dropped by reason, queued."""
        with self._lock:
            out: Dict[str, Any] = {"pairs": self.paired}
            for i, name in enumerate(self.streams):
                dropped = {r: self.dropped[i][r] for r in DROP_REASONS}
                out[name] = {"received": self.received[i], "paired": self.paired,
                             "dropped": sum(dropped.values()), "dropped_by_reason": dropped,
                             "queued": len(self._queues[i])}
            return out
