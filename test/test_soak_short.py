"""A short soak (issue 7): pairs at 30 Hz for ~20 s; no crash, exact counters, flat memory.

The 10-minute version is ``python benchmarks/soak.py --minutes 10`` (figures in BENCHMARKS.md).
"""
import sys
from pathlib import Path

import pytest

from distillmatch_ros.testing.node_harness import interfaces_available

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not interfaces_available(),
                                reason="distillmatch_msgs not built: run scripts/build_interfaces.sh")


def test_short_soak(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import soak
    r = soak.main(["--minutes", "0.33", "--model", "random", "--visible", "320x256", "--thermal", "160x128",
                   "--sample-every", "2", "--max-rss-growth", "10", "--json", str(tmp_path / "soak.json")])
    assert r["node_alive_at_end"] and r["exit_code_on_sigint"] == 0
    assert r["counters_exact"], r["counters"]
    c = r["counters"]
    assert c["pairs_processed"] > 50 and c["pairs_failed"] == 0
    assert r["errors"]["tracebacks"] == 0
    assert r["rss_growth_after_warmup_pct"] < 10, r["rss_mb"]
    assert r["ok"]
