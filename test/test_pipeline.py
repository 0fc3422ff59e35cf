"""Per-pair processing (rig mode, drift, thermal realities) with a stand-in matcher."""
import numpy as np
import pytest

from distillmatch_ros.errors import InputError
from distillmatch_ros.evaluation import project
from distillmatch_ros.pipeline import LatencyStats, PairPipeline, PipelineConfig
from distillmatch_ros.testing.fakes import H_TRUE, FakeMatcher, frames


def corner_error(Ha, Hb, size=(80, 64)):
    w, h = size
    c = np.array([[0, 0], [w, 0], [w, h], [0, h]], float)
    return float(np.abs(project(Ha, c) - project(Hb, c)).max())


def run(pipe, n, rate_hz=10.0, start=0, **kw):
    outs = []
    for k in range(start, start + n):
        vis, th = frames(k, **kw)
        outs.append(pipe.process(vis, th, int(k * 1e9 / rate_hz)))
    return outs


def test_per_pair_mode_matches_every_pair():
    m = FakeMatcher()
    pipe = PairPipeline(m, PipelineConfig(rig_mode=False, fuse=False))
    outs = run(pipe, 5)
    assert m.calls == 5 and all(o.matched and o.alignment == "aligned" for o in outs)
    assert corner_error(outs[-1].homography, H_TRUE) < 3.0
    assert outs[0].visible_size == (200, 160) and outs[0].thermal_size == (80, 64)


def test_rig_mode_rematches_at_rate_and_holds_between():
    m = FakeMatcher()
    pipe = PairPipeline(m, PipelineConfig(rig_mode=True, match_rate_hz=2.0, fuse=False))
    outs = run(pipe, 30, rate_hz=10.0)  # 3 s of pairs at 10 Hz
    assert m.calls == 6  # at 0, 0.5, ... 2.5 s
    assert all(o.homography is not None for o in outs)
    assert sum(o.matched for o in outs) == 6
    assert corner_error(pipe.held, H_TRUE) < 2.0


def test_rig_mode_detects_drift_and_realigns():
    m = FakeMatcher()
    pipe = PairPipeline(m, PipelineConfig(match_rate_hz=5.0, drift_confirmations=2, fuse=False))
    run(pipe, 10)
    assert pipe.counters["realignments"] == 0
    moved = H_TRUE.copy()
    moved[0, 2] += 40.0  # the rig was knocked: 40 px shift
    m.H = moved
    outs = run(pipe, 10, start=10)
    events = [e for o in outs for e in o.events]
    assert "drift_suspected" in events and "drift_detected" in events and "realigned" in events
    assert pipe.counters["realignments"] == 1
    assert corner_error(pipe.held, moved) < 3.0
    # the suspicion is confirmed on the very next pair, not after 1/match_rate_hz
    i = next(k for k, o in enumerate(outs) if "drift_suspected" in o.events)
    assert outs[i + 1].matched and "realigned" in outs[i + 1].events


def test_small_noise_does_not_trigger_drift_and_is_filtered():
    m = FakeMatcher()
    pipe = PairPipeline(m, PipelineConfig(match_rate_hz=0, homography_smoothing=0.2, fuse=False))
    run(pipe, 20)
    assert pipe.counters["realignments"] == 0 and pipe.alignment == "aligned"


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_constant_and_frozen_thermal_frames_are_reported_not_matched(dtype):
    m = FakeMatcher()
    pipe = PairPipeline(m, PipelineConfig(rig_mode=False, fuse=False))
    run(pipe, 3, dtype=dtype)
    vis, th = frames(50, dtype=dtype)
    flat = np.full_like(th, 7 if dtype == np.uint8 else 20000)
    out = pipe.process(vis, flat, 10**9)
    assert out.thermal_state == "constant" and "thermal_constant" in out.events and not out.matched
    assert out.homography is not None  # the last estimate is kept through the stall
    outs = [pipe.process(vis, th, 2 * 10**9 + k) for k in range(3)]  # same frame repeated
    assert [o.thermal_state for o in outs] == ["ok", "frozen", "frozen"]
    assert "thermal_frozen" in outs[1].events
    back = pipe.process(*frames(99, dtype=dtype), 3 * 10**9)
    assert back.thermal_state == "ok" and "thermal_recovered" in back.events and back.matched
    assert pipe.counters["thermal_constant_frames"] == 1 and pipe.counters["thermal_frozen_frames"] == 2


def test_gain_change_is_reported():
    pipe = PairPipeline(FakeMatcher(), PipelineConfig(fuse=False))
    vis, th = frames(0, dtype=np.uint16)
    th = (th // 4 + 1000).astype(np.uint16)
    pipe.process(vis, th, 0)
    out = pipe.process(vis, (th * 3).astype(np.uint16) + 1, 10**8)  # gain x3
    assert "gain_change" in out.events and pipe.counters["gain_changes"] == 1


def test_input_errors_are_counted_and_raised():
    pipe = PairPipeline(FakeMatcher(), PipelineConfig(fuse=False))
    with pytest.raises(InputError):
        tiny_thermal = np.random.default_rng(0).integers(0, 255, (8, 8)).astype(np.uint8)
        pipe.process(np.zeros((160, 200, 3), np.uint8), tiny_thermal, 0)
    assert pipe.counters["input_errors"] == 1


def test_configure_validates():
    pipe = PairPipeline(FakeMatcher())
    pipe.configure(fusion_alpha=0.9, match_rate_hz=1.0)
    assert pipe.config.fusion_alpha == 0.9
    for bad in ({"fusion_alpha": 2.0}, {"fusion_mode": "sum"}, {"nonsense": 1}, {"min_inliers": 2}):
        with pytest.raises(ValueError):
            pipe.configure(**bad)
    assert pipe.config.fusion_alpha == 0.9


def test_latency_stats():
    s = LatencyStats(window=100)
    for v in range(1, 201):
        s.add(v)
    summ = s.summary()
    assert summ["n"] == 100 and 149 <= summ["p50"] <= 151 and 194 <= summ["p95"] <= 196


@pytest.mark.parametrize("rig_mode", [True, False])
@pytest.mark.parametrize("guide_with_held", [True, False])
def test_unguided_pairs_of_a_guided_stream_take_one_guided_pass(rig_mode, guide_with_held):
    """With guide_with_held, a pair without a usable prior is matched by the matcher's
    match_for_stream (the next pairs iterate on the held fit); without it, every pair by match."""
    calls = []

    class Recording(FakeMatcher):
        def match(self, visible, thermal):
            calls.append("match")
            return super().match(visible, thermal)

        def match_for_stream(self, visible, thermal):
            calls.append("stream")
            return super().match(visible, thermal)

        def match_guided(self, visible, thermal, prior):
            calls.append("guided")
            return super().match(visible, thermal)
    pipe = PairPipeline(Recording(), PipelineConfig(rig_mode=rig_mode, match_rate_hz=0.0, fuse=False,
                                                    guide_with_held=guide_with_held))
    run(pipe, 3)
    assert calls == (["stream", "guided", "guided"] if guide_with_held else ["match"] * 3)
