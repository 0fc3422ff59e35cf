"""Approximate-time pairing: rates, slop, counters, and property tests."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distillmatch_ros.sync import DROP_REASONS, ApproximateTimeSynchronizer

MS = 1_000_000


def stream(rate_hz, seconds, offset_ms=0.0, jitter=None):
    n = int(seconds * rate_hz)
    return [int((k / rate_hz) * 1e9 + offset_ms * MS + (jitter[k % len(jitter)] * MS if jitter else 0))
            for k in range(n)]


def feed(sync, vis, th, latency_ms=(0, 0)):
    """Deliver two stamp lists in arrival order (stamp + latency); returns the pairs."""
    events = sorted([(t + latency_ms[0] * MS, 0, t) for t in vis] + [(t + latency_ms[1] * MS, 1, t) for t in th])
    pairs = []
    for _, i, t in events:
        pairs += sync.add(i, ("v" if i == 0 else "t", t), stamp_ns=t)
    return pairs


def check_counts(sync):
    s = sync.stats()
    for name in sync.streams:
        d = s[name]
        assert d["received"] == d["paired"] + d["dropped"] + d["queued"], s
        assert d["dropped"] == sum(d["dropped_by_reason"][r] for r in DROP_REASONS)


@pytest.mark.parametrize("th_rate", [9.0, 60.0])
@pytest.mark.parametrize("adaptive", [True, False])
def test_different_rates_pair_with_nearest(th_rate, adaptive):
    vis, th = stream(30, 3), stream(th_rate, 3, offset_ms=3.0)
    slop = 0.5 / min(30, th_rate)  # half the slower period: every slow frame has a partner
    sync = ApproximateTimeSynchronizer(queue_size=10, slop=slop, adaptive_bound=adaptive)
    pairs = feed(sync, vis, th, latency_ms=(5, 40))
    slow, fast = (th, vis) if th_rate < 30 else (vis, th)
    # every frame of the slower camera (but the last, whose partner may still be pending) pairs
    assert len(pairs) >= len(slow) - 1
    for _, _, tv, tt in pairs:
        assert abs(tv - tt) <= slop * 1e9
        # ... with its nearest frame of the faster camera
        t_slow, t_fast = (tt, tv) if th_rate < 30 else (tv, tt)
        assert abs(t_fast - t_slow) == min(abs(f - t_slow) for f in fast)
    check_counts(sync)


def test_never_beyond_slop_and_unsynchronized_streams_are_counted():
    sync = ApproximateTimeSynchronizer(queue_size=5, slop=0.01)
    pairs = feed(sync, stream(30, 2), stream(30, 2, offset_ms=16))  # >= 16 ms apart
    assert pairs == []
    s = sync.stats()
    assert s["visible"]["dropped_by_reason"]["unmatched"] > 40
    check_counts(sync)


def test_queue_overflow_when_one_stream_is_silent():
    sync = ApproximateTimeSynchronizer(queue_size=3, slop=0.05)
    for k in range(10):
        sync.add("visible", None, stamp_ns=k * 33 * MS)
    s = sync.stats()["visible"]
    assert s["queued"] == 3 and s["dropped_by_reason"]["queue_overflow"] == 7


def test_out_of_order_and_reset():
    sync = ApproximateTimeSynchronizer(queue_size=5, slop=0.05, reset_after=1.0)
    sync.add(0, "a", stamp_ns=2000 * MS)
    sync.add(0, "b", stamp_ns=1900 * MS)  # 0.1 s back: dropped
    assert sync.stats()["visible"]["dropped_by_reason"]["out_of_order"] == 1
    sync.add(0, "c", stamp_ns=10 * MS)  # 2 s back: a loop restart, accepted after a reset
    assert sync.stats()["visible"]["dropped_by_reason"]["reset"] == 1
    assert sync.add(1, "x", stamp_ns=12 * MS) == []  # a visible frame at 11-14 ms could be closer
    assert sync.add(0, "d", stamp_ns=43 * MS) == [("c", "x", 10 * MS, 12 * MS)]
    check_counts(sync)


def test_callback_and_runtime_changes():
    got = []
    sync = ApproximateTimeSynchronizer(queue_size=2, slop=0.001)
    sync.register_callback(lambda a, b: got.append((a, b)))
    sync.add(0, "v0", stamp_ns=0)
    sync.add(1, "t0", stamp_ns=5 * MS)  # 5 ms > 1 ms slop
    assert got == []
    sync.slop = 0.01
    sync.add(0, "v1", stamp_ns=100 * MS)
    sync.add(1, "t1", stamp_ns=104 * MS)
    sync.add(0, "v2", stamp_ns=200 * MS)  # tells the synchronizer no closer visible can come
    assert got == [("v1", "t1")]
    with pytest.raises(ValueError):
        sync.queue_size = 0


@settings(max_examples=200, deadline=None)
@given(data=st.data(), slop_ms=st.integers(0, 80), queue_size=st.integers(1, 8),
       adaptive=st.booleans())
def test_property_never_beyond_slop_never_loses_count(data, slop_ms, queue_size, adaptive):
    # arbitrary interleavings of two increasing-ish stamp sequences (with some going backwards)
    steps = st.lists(st.tuples(st.integers(0, 1), st.integers(-30, 120)), min_size=1, max_size=60)
    sync = ApproximateTimeSynchronizer(queue_size=queue_size, slop=slop_ms / 1000, adaptive_bound=adaptive)
    last = [0, 0]
    used = set()
    for serial, (i, dt) in enumerate(data.draw(steps)):
        last[i] += dt * MS
        for m0, m1, t0, t1 in sync.add(i, (i, last[i], serial), stamp_ns=last[i]):
            assert abs(t0 - t1) <= slop_ms * MS
            assert m0[0] == 0 and m1[0] == 1 and m0[1] == t0 and m1[1] == t1
            assert m0[2] not in used and m1[2] not in used  # a message is used once
            used.update((m0[2], m1[2]))
        check_counts(sync)
        assert max(sync.queued()) <= queue_size
