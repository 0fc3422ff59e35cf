"""Trust on an unseen camera: calibration and verification on rig recordings the model finds hard.

    python -m benchmarks.rig_trust [--model PATH] --json runs/rig_trust/report.json

Why: verification thresholds and the calibration's uncertainty were set on the dev cameras; a
new user's rig differs in resolution, scenes and light. This builds rig recordings from
``../shared/data`` (into ``--work``, never into the repository), each through one fixed, known
thermal -> visible homography (``make_bag`` with a rig homography, as ``distillmatch make-bag
--rig-homography`` does), and on each runs what a user runs:

* ``distillmatch calibrate`` (``calibrate_bag``): the calibrated error against the truth, the
  uncertainty it reports, whether it calls itself certain, and how many of the (all right)
  pairs its verification accepted;
* ``distillmatch bag-eval`` in rig mode (node defaults, and re-matching every pair): the
  homography it publishes against the per-pair fits of the protocol.

Recordings (``RECORDINGS``): ``m3svd_rig20`` is the dev recording of BENCHMARKS.md (issue 12);
the others are hard: the M3SVD val night and dusk clips with a visible camera at twice the
thermal resolution (1280x1024 against 640x512), the night clips alone through a stronger rig,
and the RoadScene val scenes, also at twice the thermal resolution.

The network's raw outputs are kept in ``--work``/network (``benchmarks.common.memoize_network``),
so a re-run after a change to verification or calibration costs no network time; a new model
gives new keys.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from benchmarks.common import DATA, REPO, machine_stamp, memoize_network, write_report

NIGHT = ["0111_1803", "0115_1831", "0115_1834", "0115_1847"]
DUSK = ["0111_1753"]

#: name -> how the recording is made (frames: source names; sizes (w, h); rig: default_rig_homography kwargs)
RECORDINGS: Dict[str, Dict[str, Any]] = {
    "m3svd_rig20": {"hard": False, "source": "m3svd_val", "visible_size": (640, 480), "thermal_size": (640, 480),
                    "rig": {"rotation_deg": 4.0, "coverage": 0.85, "shift": (0.02, -0.015)},
                    "note": "frames 0 and 9 of the eight m3svd_val clips, frame 18 of four (issue 12's bag)"},
    "night_dusk_2x": {"hard": True, "source": "m3svd_val", "visible_size": (1280, 1024), "thermal_size": (640, 512),
                      "rig": {"rotation_deg": 3.0, "coverage": 0.8, "shift": (0.03, -0.02)},
                      "note": "8 frames (every 2nd) of the four night clips and the dusk clip, 40 frames"},
    "night_2x_rot8": {"hard": True, "source": "m3svd_val", "visible_size": (1280, 1024), "thermal_size": (640, 512),
                      "rig": {"rotation_deg": -8.0, "coverage": 0.7, "shift": (-0.04, 0.03),
                              "perspective": (4e-5, 2e-5)},
                      "note": "10 frames (every 2nd) of the four night clips, 40 frames, a stronger rig"},
    # RoadScene's aligned pairs are themselves off one homography by about 2 px at the corners
    # (registration_correction): the calibration is judged against the stated rig homography
    # composed with that measured registration, and the stated-truth error is reported beside.
    "roadscene_2x": {"hard": True, "source": "roadscene", "visible_size": (1024, 768), "thermal_size": (512, 384),
                     "rig": {"rotation_deg": 6.0, "coverage": 0.9, "shift": (0.01, 0.02)},
                     "registration": "roadscene", "note": "the 20 RoadScene val scenes"},
}


def frame_names(name: str, data: Path) -> List[str]:
    if name == "m3svd_rig20":
        clips = json.load(open(data / "m3svd_val" / "clips.json"))["clips"]
        return [f"{c}_{f:04d}" for c in clips for f in (0, 9)] + [f"{c}_0018" for c in clips[::2]]
    if name == "night_dusk_2x":
        return [f"{c}_{f:04d}" for c in DUSK + NIGHT for f in range(0, 16, 2)]
    if name == "night_2x_rot8":
        return [f"{c}_{f:04d}" for c in NIGHT for f in range(0, 20, 2)]
    if name == "roadscene_2x":
        return [os.path.splitext(n)[0] for n in json.load(open(data / "roadscene" / "split.json"))["val"]]
    raise KeyError(name)


def build(name: str, data: Path, work: Path) -> Dict[str, Any]:
    """The recording's bag and ground-truth JSON under ``work`` (made once)."""
    from distillmatch_ros.bag.make_bag import default_rig_homography, make_bag, pairs_from_folder, write_gt_json
    spec = RECORDINGS[name]
    bag, gt = work / "bags" / name, work / "bags" / f"{name}.gt_homography.json"
    if bag.exists() and gt.exists():
        return {"bag": str(bag), "gt": str(gt), "H": np.array(json.load(open(gt)))}
    folder = work / "pairs" / name
    src = data / spec["source"]
    for sub in ("visible", "thermal"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for n in frame_names(name, data):
            ext = ".jpg" if (src / sub / f"{n}.jpg").exists() else ".png"
            link = folder / sub / f"{n}{ext}"
            if not link.exists():
                link.symlink_to(src / sub / f"{n}{ext}")
    pairs = pairs_from_folder(str(folder))
    H = default_rig_homography(spec["visible_size"], spec["thermal_size"], **spec["rig"])
    bag.parent.mkdir(parents=True, exist_ok=True)
    make_bag(str(bag), pairs, rig_homography=H, visible_size=spec["visible_size"],
             thermal_size=spec["thermal_size"], thermal_encoding="mono16")
    write_gt_json(str(gt), H)
    return {"bag": str(bag), "gt": str(gt), "H": H}


def run_one(name: str, matcher, matcher_name: str, data: Path, work: Path, frames: int) -> Dict[str, Any]:
    from distillmatch_ros.bag.calibrate import calibrate_bag
    from distillmatch_ros.bag.io import BagError
    from distillmatch_ros.bag.make_bag import THERMAL_TOPIC, VISIBLE_TOPIC
    from distillmatch_ros.bag.replay import bag_eval
    from distillmatch_ros.pipeline import PipelineConfig

    rec = build(name, data, work)
    out = work / "out" / name
    t0 = time.perf_counter()
    try:
        r = calibrate_bag(rec["bag"], matcher, VISIBLE_TOPIC, THERMAL_TOPIC, str(out / "rig.yaml"), frames=frames,
                          gt_homography=rec["H"], report_dir=str(out / "calibrate"), progress=False,
                          matcher_name=matcher_name)
    except BagError as exc:  # no calibration at all: it said that it cannot
        r = {"calibration": {"corner_uncertainty_px": {}, "frames_used": 0, "method": {}, "certain": False,
                             "uncertain_because": str(exc)[-160:]},
             "counts": getattr(exc, "counts", {"matched": 0, "verified": 0}),
             "rejected_by": getattr(exc, "rejected_by", {}), "pairs": [], "calibrated_error_px": None,
             "pooled_without_refinement_error_px": None, "per_pair_error_median_px": None,
             "verified_pair_error_median_px": None}
    cal = r["calibration"]
    unc = cal["corner_uncertainty_px"]
    rows = r["pairs"]
    stated_error = r["calibrated_error_px"]
    if RECORDINGS[name].get("registration") and cal.get("homography") is not None:
        from distillmatch_ros import evaluation
        truth = evaluation.GroundTruth.from_homography(registration_correction(name, data) @ rec["H"],
                                                       RECORDINGS[name]["thermal_size"])
        r["calibrated_error_px"] = evaluation.probe_error(truth, np.asarray(cal["homography"], np.float64))
    row: Dict[str, Any] = {
        "recording": name, "hard": RECORDINGS[name]["hard"], "calibrate_s": round(time.perf_counter() - t0, 1),
        "matched": r["counts"]["matched"], "verified": r["counts"]["verified"],
        "verified_unguided": r["counts"].get("verified_unguided"), "prior_error_px": r.get("prior_error_px"),
        "guided_per_pair_error_median_px": r.get("guided_per_pair_error_median_px"),
        "right_pair_acceptance": r["counts"]["verified"] / max(r["counts"]["matched"], 1),
        "rejected_by": r["rejected_by"], "frames_used": cal["frames_used"],
        "calibrated_error_px": r["calibrated_error_px"], "stated_truth_error_px": stated_error,
        "uncertainty_px": unc.get("mean"),
        "uncertainty_max_px": unc.get("max"), "certain": cal.get("certain"), "why": cal.get("uncertain_because"),
        "pooled_without_refinement_error_px": r["pooled_without_refinement_error_px"],
        "per_pair_error_median_px": r["per_pair_error_median_px"],
        "verified_pair_error_median_px": r["verified_pair_error_median_px"],
        "refine": cal["method"].get("refine"), "refine_change_px": cal["method"].get("refine_change_px"),
        "pair_inliers": [x["inliers"] for x in rows], "pair_matches": [x["matches"] for x in rows]}
    for label, rate in (("rig_default", None), ("rig_every_pair", 0.0)):
        cfg = PipelineConfig(rig_mode=True, fuse=False)
        if rate is not None:
            cfg.match_rate_hz = rate
        s = bag_eval(rec["bag"], matcher, VISIBLE_TOPIC, THERMAL_TOPIC, str(out / f"bag_eval_{label}"),
                     gt_homography=rec["H"], config=cfg.validated(), examples=0, progress=False, plots=False,
                     matcher_name=matcher_name)
        pub = [e for e in s["published_error_px"] if e is not None]
        row[label] = {"pairs_matched": s["pairs_matched"], "per_pair_median_px": s["homography_error_median_px"],
                      "per_pair_auc": s["auc"], "published_median_px": float(np.median(pub)) if pub else None,
                      "published_final_px": s["published_error_px"][-1], "published_auc": s["published_auc"]}
    return row


def aligned_shifts(name: str, data: Path, size=None):
    """Dense correspondences from the identity on each of a recording's *aligned* source pairs
    (``calibration.dense_correspondences``, no network), both images resized to ``size`` (or
    as stored). Yields (thermal points, visible points, (w, h)) per pair."""
    import cv2

    from distillmatch_ros import calibration as C
    src = data / RECORDINGS[name]["source"]
    for n in frame_names(name, data):
        ext = ".jpg" if (src / "visible" / f"{n}.jpg").exists() else ".png"
        t, v = (cv2.imread(str(src / sub / f"{n}{ext}"), cv2.IMREAD_GRAYSCALE) for sub in ("thermal", "visible"))
        if size is not None:
            t, v = (cv2.resize(x, size, interpolation=cv2.INTER_AREA) for x in (t, v))
        a, b = C.dense_correspondences(np.eye(3), t, v, step=12, search=6)
        yield a, b, (t.shape[1], t.shape[0])


def registration_correction(name: str, data: Path) -> np.ndarray:
    """The homography (visible px of the recording -> visible px) by which the source pairs'
    own alignment is off, measured without the network: :func:`aligned_shifts` with both images
    resized as ``make_bag`` resizes the visible one (at half the visible size: the same aspect,
    a quarter of the work), pooled over the recording's pairs and fitted robustly. The
    recording's real geometry is this composed with its rig homography (``make_bag`` takes the
    pairs as exactly aligned)."""
    from distillmatch_ros import calibration as C
    vw, vh = RECORDINGS[name]["visible_size"]
    found = list(aligned_shifts(name, data, (vw // 2, vh // 2)))
    A, _ = C.robust_fit(np.concatenate([a for a, _, _ in found]), np.concatenate([b for _, b, _ in found]), 1.5)
    up = np.array([[2.0, 0, 0.5], [0, 2.0, 0.5], [0, 0, 1]])  # half-size px -> visible px (pixel centres)
    return up @ A @ np.linalg.inv(up)


def roadscene_self_alignment(data: Path) -> Dict[str, Any]:
    """Median dense shift (thermal px) on the *aligned* RoadScene val pairs, from the identity,
    by thirds of the image: how far their own alignment, the ground truth of ``roadscene_2x``,
    is from one homography (:func:`aligned_shifts` at the stored size)."""
    r = np.concatenate([np.c_[a / wh, b - a] for a, b, wh in aligned_shifts("roadscene_2x", data) if len(a)])
    out: Dict[str, Any] = {"points": int(len(r)), "median_shift_px": np.round(np.median(r[:, 2:], 0), 2).tolist()}
    for axis, name in ((1, "rows"), (0, "columns")):
        for lo in (0.0, 1 / 3, 2 / 3):
            m = (r[:, axis] >= lo) & (r[:, axis] < lo + 1 / 3)
            out[f"{name}_{lo:.2f}"] = np.round(np.median(r[m, 2:], 0), 2).tolist()
    return out


def _f(x, fmt="{:.2f}"):
    return "n/a" if x is None else fmt.format(x)


def print_table(rows: List[Dict[str, Any]]) -> None:
    print("| recording | calibrated error | reported uncertainty | certain | right pairs accepted | "
          "pooled before refinement | per-pair median | rig mode published / per-pair median (AUC@10) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        be = r["rig_default"]
        print(f"| {r['recording']}{' (hard)' if r['hard'] else ''} | {_f(r['calibrated_error_px'])} px | "
              f"{_f(r['uncertainty_px'])} px | {'yes' if r['certain'] else 'no: ' + str(r['why'])} | "
              f"{r['verified']} / {r['matched']} ({r['right_pair_acceptance']:.0%}) | "
              f"{_f(r['pooled_without_refinement_error_px'])} px | {_f(r['per_pair_error_median_px'])} px | "
              f"{_f(be['published_median_px'])} / {_f(be['per_pair_median_px'])} px "
              f"({be['published_auc']['10']:.2f} / {be['per_pair_auc']['10']:.2f}) |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint path or shipped model name (default: shipped)")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--work", default=str(REPO / "runs" / "rig_trust"), help="bags, outputs and the network cache")
    ap.add_argument("--recordings", nargs="+", default=list(RECORDINGS), choices=list(RECORDINGS))
    ap.add_argument("--frames", type=int, default=20, help="calibrate --frames")
    ap.add_argument("--no-network-cache", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    data, work = Path(args.data), Path(args.work)
    if not data.is_dir():
        print(f"data folder {data} is absent: no recordings can be made (see ../shared/docs/DATA.md)")
        return 2
    import torch

    from distillmatch_ros.matcher import Matcher
    torch.set_num_threads(args.threads)
    matcher = Matcher.from_pretrained(args.model, backend=args.backend)
    if not args.no_network_cache:
        memoize_network(matcher, work / "network")
    name = f"{os.path.basename(str(matcher.model_path))} ({matcher.backend})"
    rows = []
    for rec in args.recordings:
        print(f"{rec}: {RECORDINGS[rec]['note']}", flush=True)
        rows.append(run_one(rec, matcher, name, data, work, args.frames))
        r = rows[-1]
        print(f"  calibrated {_f(r['calibrated_error_px'])} px, reported {_f(r['uncertainty_px'])} px, certain "
              f"{r['certain']}, accepted {r['verified']}/{r['matched']}, {r['calibrate_s']} s", flush=True)
    hard = [r for r in rows if r["hard"]]

    def good(r):
        return bool(r["certain"] and r["calibrated_error_px"] is not None and r["calibrated_error_px"] <= 1.5)
    checks = {
        "within_1p5_or_uncertain": all(not r["certain"] or r["calibrated_error_px"] <= 1.5 for r in rows),
        "certain_and_within_1p5": {r["recording"]: good(r) for r in rows},
        "hard_certain_and_within_1p5_fraction": float(np.mean([good(r) for r in hard])) if hard else None,
        "uncertainty_at_least_a_third_of_error": {
            r["recording"]: bool(r["uncertainty_px"] is not None
                                 and r["uncertainty_px"] >= r["calibrated_error_px"] / 3)
            for r in rows if r["calibrated_error_px"] is not None},
        "right_pair_acceptance_min": min(r["right_pair_acceptance"] for r in rows),
        "right_pair_acceptance_pooled": sum(r["verified"] for r in rows) / max(sum(r["matched"] for r in rows), 1),
        "published_no_worse_than_per_pair": {
            r["recording"]: bool(r["rig_default"]["published_auc"]["10"] >= r["rig_default"]["per_pair_auc"]["10"])
            for r in rows}}
    truth = roadscene_self_alignment(data) if "roadscene_2x" in args.recordings else None
    if truth:
        print("RoadScene's own alignment (median dense shift dx, dy by thirds):", json.dumps(truth))
    out = {**machine_stamp(detail=True), "model": name, "roadscene_self_alignment": truth,
           "command": " ".join(["python -m benchmarks.rig_trust", *sys.argv[1:]]), "rows": rows, "checks": checks}
    print()
    print_table(rows)
    print(json.dumps(checks, indent=1))
    write_report(out, args.json, show=False, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    return 0


if __name__ == "__main__":
    sys.exit(main())
