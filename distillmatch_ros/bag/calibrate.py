"""``distillmatch calibrate``: a rig's thermal -> visible homography from a recording.

Nothing here reads, pairs or matches on its own: messages come from :class:`BagReader`, pairs
from the node's synchronizer (``replay._synchronized``), and every pair goes through the
node's :meth:`PairPipeline.step` (thermal stall checks, the Matcher with its verification).
The verified frames are pooled and fitted by :mod:`distillmatch_ros.calibration`.

Before the network runs on a pair, its thermal thumbnail is compared with the frames already
matched: a repeat of known content adds nothing to a rig calibration (the matcher's error on
the same content repeats), so it is skipped; matching stops after ``4 x frames`` candidates.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

import numpy as np

from .. import calibration as cal_mod
from .. import evaluation
from ..errors import InputError
from ..image_codec import decode_pair
from ..pipeline import PairPipeline, PipelineConfig
from ..preprocess import check_visible, thermal_gray
from ..sync import DEFAULTS as SYNC_DEFAULTS
from ..sync import ApproximateTimeSynchronizer, header_stamp_ns
from .io import BagError, BagReader
from .replay import _check_encodings, _synchronized


def calibrate_bag(bag: str, matcher: Any, visible_topic: str, thermal_topic: str, out_path: str,
                  frames: int = cal_mod.DEFAULTS["frames"], gt_homography: Optional[np.ndarray] = None,
                  report_dir: Optional[str] = None, refine: bool = cal_mod.DEFAULTS["refine"],
                  queue_size: int = SYNC_DEFAULTS["queue_size"], slop: float = SYNC_DEFAULTS["slop"],
                  min_novelty: float = 0.02,
                  max_candidates: Optional[int] = None, progress: bool = True, matcher_name: str = "",
                  guided: bool = True) -> Dict:
    """Calibrate from ``bag``, write ``out_path`` (YAML) and, with ``report_dir``, a report.

    With ``guided`` (the default) the matched pairs are matched a second time with the first
    pooled fit as a prior (:meth:`Matcher.match_guided`): the network then sees each pair
    nearly aligned, whatever the rig's rotation, zoom and resolution ratio, and the evidence
    pooled for the calibration comes from that second pass. Without a verified pair in the
    first pass there is no prior, and the bag cannot be calibrated.

    Returns the report content (also written as report.json / report.md in ``report_dir``).
    """
    from tqdm import tqdm

    if frames < 2:
        raise BagError("--frames must be at least 2")
    if visible_topic == thermal_topic:
        raise BagError("visible and thermal topics must differ")
    max_candidates = max_candidates or 4 * frames
    # Each pair matched on its own in the first pass (no guidance by the previous pair): the
    # guided pass below takes its prior from the pool of all of them.
    pipe = PairPipeline(matcher, PipelineConfig(rig_mode=False, fuse=False, guide_with_held=False))
    sync = ApproximateTimeSynchronizer(queue_size=queue_size, slop=slop, streams=("visible", "thermal"))
    stream_of = {visible_topic: "visible", thermal_topic: "thermal"}
    opts = getattr(matcher, "options", {})
    candidates: List[cal_mod.FrameEvidence] = []
    kept: List[Any] = []  # (stamp, visible gray, thermal, thermal gray) of matched pairs, for the guided pass
    seen_thumbs: List[np.ndarray] = []
    per_pair: List[Dict[str, Any]] = []
    sizes = None
    counts = {"pairs": 0, "skipped_repeat": 0, "matched": 0, "verified": 0, "rejected": 0, "bad": 0}
    reasons: Dict[str, int] = {}
    stamps: List[int] = []
    with BagReader(bag) as reader:
        reader.require_image_topics([visible_topic, thermal_topic])
        _check_encodings(reader, visible_topic, thermal_topic)
        bar = tqdm(total=reader.count([visible_topic, thermal_topic]), desc="calibrate", unit="msg",
                   disable=not progress)
        for vmsg, tmsg, sv, _st in _synchronized(reader, sync, stream_of, bar):
            counts["pairs"] += 1
            stamps.append(int(sv))
            if counts["matched"] >= max_candidates:
                continue
            try:
                vis, th = decode_pair(vmsg, tmsg)
                th8 = thermal_gray(th, opts)
            except InputError:
                counts["bad"] += 1
                continue
            thumb = cal_mod.thumbnail(th8)
            if seen_thumbs and max(float(thumb @ t) for t in seen_thumbs) > 1.0 - min_novelty:
                counts["skipped_repeat"] += 1
                continue
            try:
                out = pipe.step(vis, th, header_stamp_ns(vmsg))
            except InputError:
                counts["bad"] += 1
                continue
            if not out.matched:
                continue
            counts["matched"] += 1
            seen_thumbs.append(thumb)
            sizes = (out.thermal_size, out.visible_size)
            vis_gray = check_visible(vis)
            ev = cal_mod.evidence_from_result(out.result, sv, th8, sizes[0], vis_gray, keep_images=refine)
            per_pair.append({"stamp_ns": int(sv), **_account(out.result, gt_homography, sizes, ev, counts, reasons)})
            if guided:
                kept.append((int(sv), vis_gray, th, th8))
            if ev is not None:
                candidates.append(ev)
            bar.set_postfix(verified=counts["verified"])
        bar.close()
    if not candidates:
        err = BagError(f"no pair of {bag} gave a verified homography ({counts['matched']} matched, reasons: "
                       f"{reasons or 'none'}); check the topics, or record views with more structure")
        err.counts, err.rejected_by = counts, reasons  # what a benchmark reports about this bag
        raise err
    prior = None
    if guided:
        # The first pass's pooled fit (no refinement: a prior only has to be within the
        # network's reach, a few px) guides a second match of every kept pair.
        prior = cal_mod.prior_of(cal_mod.select_frames(candidates, frames), sizes[0], sizes[1])
        counts["verified_unguided"], counts["verified"], counts["rejected"] = counts["verified"], 0, 0
        reasons_unguided, reasons = dict(reasons), {}
        guided_candidates: List[cal_mod.FrameEvidence] = []
        passes = cal_mod.guided_pass(kept, matcher.match_guided, prior, sizes[0], keep_images=refine)
        for row, (res, ev) in zip(per_pair, passes, strict=True):
            row["guided"] = _account(res, gt_homography, sizes, ev, counts, reasons)
            if ev is not None:
                guided_candidates.append(ev)
        if guided_candidates:
            candidates = guided_candidates
        else:  # nothing verified with the prior: keep the first pass's evidence, and say so
            reasons["no guided pair verified: the first pass's evidence is used"] = 1
        counts["rejected_by_unguided"] = reasons_unguided
    chosen = cal_mod.select_frames(candidates, frames)
    cal = cal_mod.fit_pooled(chosen, sizes[0], sizes[1], cal_mod.FitOptions(refine=refine))
    cal.model = matcher_name or str(getattr(matcher, "model_path", ""))
    cal.method["guided"] = ("second pass with the first pass's pooled fit as prior" if prior is not None
                            else "none")
    cal.source = {"bag": os.path.abspath(bag), "visible_topic": visible_topic, "thermal_topic": thermal_topic,
                  "bag_time_range_ns": [min(stamps), max(stamps)] if stamps else None}
    cal_mod.save_calibration(out_path, cal)
    report: Dict[str, Any] = {"calibration": cal.to_dict(), "out": os.path.abspath(out_path), "counts": counts,
                              "rejected_by": reasons, "pairs": per_pair}
    if gt_homography is not None:
        truth = evaluation.GroundTruth.from_homography(gt_homography, sizes[0])
        errs = [r["error_px"] for r in per_pair]
        ver = [r["verified_error_px"] for r in per_pair if r["verified_error_px"] is not None]
        if prior is not None:
            report["prior_error_px"] = evaluation.probe_error(truth, prior)
            g_errs = [r["guided"]["error_px"] for r in per_pair]
            report["guided_per_pair_error_median_px"] = float(np.median(g_errs)) if g_errs else None
        report["calibrated_error_px"] = evaluation.probe_error(truth, cal.homography)
        report["per_pair_error_median_px"] = float(np.median(errs)) if errs else None
        report["verified_pair_error_median_px"] = float(np.median(ver)) if ver else None
        report["per_pair_auc"] = {str(t): evaluation.auc(errs, t) for t in evaluation.AUC_THRESHOLDS}
        pool_only = cal_mod.fit_pooled(chosen, sizes[0], sizes[1], cal_mod.FitOptions(refine=False, bootstrap=0))
        report["pooled_without_refinement_error_px"] = evaluation.probe_error(truth, pool_only.homography)
    if report_dir:
        _write_report(report, report_dir)
    return report


def _account(res: Any, gt_homography: Optional[np.ndarray], sizes, ev: Optional[cal_mod.FrameEvidence],
             counts: Dict[str, Any], reasons: Dict[str, int]) -> Dict[str, Any]:
    """A pair's report row from its MatchResult (errors against the truth when given); counts
    it as verified (it has evidence) or rejected (why)."""
    row = {"matches": len(res), "inliers": res.num_inliers, "verified": res.homography is not None,
           "verification": res.verification, "confidence": round(float(res.confidence), 3)}
    if gt_homography is not None:
        truth = evaluation.GroundTruth.from_homography(gt_homography, sizes[0])
        row["error_px"] = evaluation.homography_error(truth, np.asarray(res.visible_points, np.float64),
                                                      np.asarray(res.thermal_points, np.float64))
        row["verified_error_px"] = (evaluation.probe_error(truth, res.homography)
                                    if res.homography is not None else None)
    if ev is None:
        counts["rejected"] += 1
        reasons[res.verification] = reasons.get(res.verification, 0) + 1
    else:
        counts["verified"] += 1
    return row


def _write_report(report: Dict, report_dir: str) -> None:
    os.makedirs(report_dir, exist_ok=True)
    with open(os.path.join(report_dir, "report.json"), "w") as f:
        json.dump(_jsonable(report), f, indent=1, allow_nan=False)
    c, counts = report["calibration"], report["counts"]
    unc = c["corner_uncertainty_px"]
    lines = ["# distillmatch calibrate report", "",
             f"- bag: `{c['source'].get('bag')}`, topics `{c['source'].get('visible_topic')}` / "
             f"`{c['source'].get('thermal_topic')}`", f"- model: {c['model']}", f"- written: `{report['out']}`", "",
             "| figure | value |", "|---|---|",
             f"| synchronized pairs | {counts['pairs']} |",
             f"| matched / verified / rejected | {counts['matched']} / {counts['verified']} / {counts['rejected']} |",
             f"| skipped as repeated content | {counts['skipped_repeat']} |",
             f"| second pass | {c['method'].get('guided', 'none')}; verified without the prior: "
             f"{counts.get('verified_unguided', counts['verified'])} |",
             f"| frames used / inliers used | {c['frames_used']} / {c['inliers_used']} |",
             f"| **certain** | **{'yes' if c['certain'] else 'no: ' + str(c['uncertain_because'])}** |",
             f"| corner uncertainty mean / max (bootstrap, halves, restart) | {_f(unc.get('mean'))} / "
             f"{_f(unc.get('max'))} px |",
             f"| refinement | {c['method'].get('refine')} |"]
    if "calibrated_error_px" in report:
        lines += [f"| **calibrated homography error** (vs ground truth) | **{_f(report['calibrated_error_px'])} px** |",
                  f"| pooled fit before refinement | {_f(report['pooled_without_refinement_error_px'])} px |",
                  f"| prior of the guided pass (first pass, pooled) | {_f(report.get('prior_error_px'))} px |",
                  f"| per-pair error median (protocol fit, all matched pairs) | "
                  f"{_f(report['per_pair_error_median_px'])} px |",
                  f"| per-pair error median (verified pairs only) | {_f(report['verified_pair_error_median_px'])} px |",
                  "| per-pair AUC@3/5/10 | " + " / ".join(f"{report['per_pair_auc'][k]:.3f}" for k in ("3", "5", "10"))
                  + " |"]
    if report["rejected_by"]:
        lines += ["", "Rejected pairs by reason: " + "; ".join(f"{k}: {v}" for k, v in report["rejected_by"].items())]
    with open(os.path.join(report_dir, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def _f(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.2f}"


def _jsonable(o):
    if isinstance(o, dict):
        return {k: _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, np.integer):
        return int(o)
    return o
