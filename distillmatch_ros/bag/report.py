"""Turning per-pair replay records into report.json, report.md and plots.

Why a separate module: the numbers (what a team compares between models and settings) must not
depend on matplotlib being importable, so the JSON is written first and plotting is best-effort
in its own function.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import cv2
import numpy as np

from .. import evaluation


@dataclass
class PairRecord:
    """What bag-eval keeps about one synchronized pair."""

    stamp_ns: int  # visible stamp (the one the node's outputs carry)
    thermal_stamp_ns: int
    latency_ms: float  # wall time of the node's per-pair processing
    matches: int
    inliers: int
    homography: Optional[np.ndarray]  # published thermal -> visible estimate (None: none yet)
    thermal_size: tuple  # (width, height), for corner probes
    matched: bool = True  # False where the pipeline only re-fused with a held homography
    error_px: Optional[float] = None  # protocol error (evaluation.py) of a MAGSAC fit to this pair's matches
    published_error_px: Optional[float] = None  # same probes, the homography the node published
    notes: List[str] = field(default_factory=list)


def _pct(values, q) -> Optional[float]:
    return float(np.percentile(values, q)) if len(values) else None


def corner_jitter(records: List[PairRecord]) -> List[Optional[float]]:
    """Per pair: mean distance (visible px) of its thermal corners' images from the run median.

    A rigid rig should give a flat line; spikes are frames where the alignment jumped.
    """
    pts = []
    for r in records:
        if r.homography is None:
            pts.append(None)
            continue
        w, h = r.thermal_size
        c = evaluation.thermal_corners(w, h)
        pts.append(cv2.perspectiveTransform(c[:, None], np.asarray(r.homography, np.float64))[:, 0])
    valid = [p for p in pts if p is not None]
    if not valid:
        return [None] * len(records)
    ref = np.median(np.stack(valid), axis=0)
    return [None if p is None else float(np.linalg.norm(p - ref, axis=1).mean()) for p in pts]


def build_summary(records: List[PairRecord], pairs_dropped: int, info: Dict,
                  gt_homography: Optional[np.ndarray]) -> Dict:
    """The content of report.json (plain JSON types only; inf is written as null)."""
    lat = [r.latency_ms for r in records]
    matched = [r for r in records if r.matched]
    jitter = corner_jitter(records)
    jit_valid = [j for j in jitter if j is not None]
    out = {
        "pairs_evaluated": len(records),
        "pairs_dropped": int(pairs_dropped),
        "pairs_matched": len(matched),
        "latency_ms": {"p50": _pct(lat, 50), "p95": _pct(lat, 95), "mean": float(np.mean(lat)) if lat else None},
        "matches_mean": float(np.mean([r.matches for r in matched])) if matched else 0.0,
        "inliers_mean": float(np.mean([r.inliers for r in matched])) if matched else 0.0,
        "homography_found": sum(r.homography is not None for r in records),
        "corner_jitter_px": {"p50": _pct(jit_valid, 50), "p95": _pct(jit_valid, 95)},
        "info": info,
        "pairs": [{"stamp_ns": r.stamp_ns, "thermal_stamp_ns": r.thermal_stamp_ns,
                   "latency_ms": round(r.latency_ms, 3), "matches": r.matches, "inliers": r.inliers,
                   "matched": r.matched, "corner_jitter_px": j,
                   "homography": None if r.homography is None else np.asarray(r.homography).tolist(),
                   "notes": r.notes}
                  for r, j in zip(records, jitter, strict=True)],
    }
    if gt_homography is not None:
        # Per pair, aligned with "pairs"; null where the matcher did not run (rig-mode hold) or
        # where no homography could be fitted (an infinite error, counted as such in the AUC).
        errs = [r.error_px for r in records if r.matched and r.error_px is not None]
        out["gt_homography"] = np.asarray(gt_homography).tolist()
        out["homography_error_px"] = [_finite_or_none(r.error_px) for r in records]
        out["homography_failures"] = sum(not math.isfinite(e) for e in errs)
        out["auc_pairs"] = len(errs)
        out["auc"] = {str(t): evaluation.auc(errs, t) for t in evaluation.AUC_THRESHOLDS}
        out["homography_error_median_px"] = _finite_or_none(float(np.median(errs))) if errs else None
        # What fusion used: the held (rig mode) or per-pair homography, infinite while unaligned.
        pub = [r.published_error_px if r.published_error_px is not None else float("inf") for r in records]
        out["published_error_px"] = [_finite_or_none(e) for e in pub]
        out["published_auc"] = {str(t): evaluation.auc(pub, t) for t in evaluation.AUC_THRESHOLDS}
    return out


def _finite_or_none(x):
    return float(x) if x is not None and math.isfinite(x) else None


def write_json(summary: Dict, report_dir: str) -> str:
    path = os.path.join(report_dir, "report.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=1, allow_nan=False)
    return path


def write_plots(records: List[PairRecord], summary: Dict, report_dir: str) -> List[str]:
    """Matches/inliers over time, latency histogram, corner jitter (and GT error) over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not records:
        return []
    t0 = records[0].stamp_ns
    t = np.array([(r.stamp_ns - t0) * 1e-9 for r in records])
    written = []

    fig, ax = plt.subplots(figsize=(7, 3))
    m = np.array([r.matched for r in records])
    ax.plot(t[m], [r.matches for r in records if r.matched], ".-", label="matches")
    ax.plot(t[m], [r.inliers for r in records if r.matched], ".-", label="inliers")
    ax.set_xlabel("bag time [s]")
    ax.set_ylabel("count")
    ax.legend()
    ax.grid(alpha=0.3)
    ax.set_title("Matches and homography inliers per synchronized pair")
    written.append(_save(fig, report_dir, "matches_inliers.png"))

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist([r.latency_ms for r in records], bins=min(30, max(5, len(records) // 2)))
    lat = summary["latency_ms"]
    ax.axvline(lat["p50"], color="k", ls="--", label=f"p50 {lat['p50']:.0f} ms")
    ax.axvline(lat["p95"], color="r", ls=":", label=f"p95 {lat['p95']:.0f} ms")
    ax.set_xlabel("per-pair latency [ms]")
    ax.set_ylabel("pairs")
    ax.legend()
    written.append(_save(fig, report_dir, "latency_hist.png"))

    fig, ax = plt.subplots(figsize=(7, 3))
    jit = [p["corner_jitter_px"] for p in summary["pairs"]]
    ax.plot(t, [np.nan if j is None else j for j in jit], ".-", label="corner jitter vs run median [visible px]")
    if "homography_error_px" in summary:
        ax.plot(t, [np.nan if e is None else e for e in summary["homography_error_px"]], "x",
                label="per-pair fit error vs ground truth [thermal px]")
    if "published_error_px" in summary:
        ax.plot(t, [np.nan if e is None else e for e in summary["published_error_px"]], "-",
                label="published (held) homography error [thermal px]")
    ax.set_xlabel("bag time [s]")
    ax.set_ylabel("px")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Homography stability")
    written.append(_save(fig, report_dir, "homography_stability.png"))
    return written


def _save(fig, report_dir, name):
    path = os.path.join(report_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return name


def write_markdown(summary: Dict, report_dir: str, images: List[str], fused: List[str]) -> str:
    """A short human-readable report next to report.json."""
    info = summary["info"]
    lat = summary["latency_ms"]
    lines = [
        "# distillmatch bag-eval report", "",
        f"- bag: `{info.get('bag')}` ({info.get('storage')})",
        f"- topics: visible `{info.get('visible_topic')}` ({_short(info.get('visible_type'))}), "
        f"thermal `{info.get('thermal_topic')}` ({_short(info.get('thermal_type'))})",
        f"- matcher: {info.get('matcher')}; rig mode: {info.get('rig_mode')}", "",
        "| figure | value |", "|---|---|",
        f"| pairs evaluated | {summary['pairs_evaluated']} |",
        f"| pairs dropped by the synchronizer | {summary['pairs_dropped']} |",
        f"| pairs matched (network run) | {summary['pairs_matched']} |",
        f"| latency p50 / p95 | {_fmt(lat['p50'])} / {_fmt(lat['p95'])} ms |",
        f"| matches / inliers (mean) | {summary['matches_mean']:.1f} / {summary['inliers_mean']:.1f} |",
        f"| homography found | {summary['homography_found']} of {summary['pairs_evaluated']} |",
        f"| corner jitter p50 / p95 | {_fmt(summary['corner_jitter_px']['p50'])} / "
        f"{_fmt(summary['corner_jitter_px']['p95'])} px |",
    ]
    if "auc" in summary:
        a = summary["auc"]
        lines.append(f"| AUC@3/5/10 px (vs ground truth) | {a['3']:.3f} / {a['5']:.3f} / {a['10']:.3f} |")
        lines.append(f"| median homography error | {_fmt(summary.get('homography_error_median_px'))} px |")
    if "published_auc" in summary:
        a = summary["published_auc"]
        lines.append(f"| published homography AUC@3/5/10 px | {a['3']:.3f} / {a['5']:.3f} / {a['10']:.3f} |")
    lines.append("")
    for name in images:
        lines += [f"![{name}]({name})", ""]
    if fused:
        lines += ["## Example fused frames", ""] + [f"![{f}]({f})" for f in fused] + [""]
    path = os.path.join(report_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def _fmt(x):
    return "n/a" if x is None else f"{x:.2f}"


def _short(msgtype) -> str:
    """'sensor_msgs/msg/CompressedImage' -> 'CompressedImage' (the report's topic line)."""
    return str(msgtype or "?").rsplit("/", 1)[-1]
