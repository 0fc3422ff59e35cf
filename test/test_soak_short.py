"""A short soak: pairs at 30 Hz for ~20 s; no crash, exact counters, flat memory.

The benchmark runs as users run it (``python -m benchmarks.soak`` from the repository root) and
the test reads the report it writes. The 10-minute version is ``python -m benchmarks.soak
--minutes 10`` (figures in BENCHMARKS.md).
"""
import json
import subprocess
import sys
from pathlib import Path

from distillmatch_ros.testing.node_harness import requires_node

ROOT = Path(__file__).resolve().parents[1]
pytestmark = requires_node()


def test_short_soak(tmp_path):
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.soak", "--minutes", "0.33", "--model", "random", "--visible", "320x256",
         "--thermal", "160x128", "--sample-every", "2", "--max-rss-growth", "10", "--json", str(out)],
        cwd=str(ROOT), capture_output=True, text=True, timeout=900)
    print(proc.stdout, proc.stderr[-3000:], sep="\n")  # shown by pytest when an assertion below fails
    assert out.is_file(), f"soak wrote no report (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    r = json.loads(out.read_text())
    assert r["node_alive_at_end"] and r["exit_code_on_sigint"] == 0
    assert r["counters_exact"], r["counters"]
    c = r["counters"]
    assert c["pairs_processed"] > 50 and c["pairs_failed"] == 0
    assert r["errors"]["tracebacks"] == 0
    assert r["rss_growth_after_warmup_pct"] < 10, r["rss_mb"]
    assert r["ok"]
