"""Operating point of the homography verification: wrong-pair and right-pair acceptance.

    python -m benchmarks.verification_operating_point [--model PATH] --network-cache runs/verify/network \
        --json runs/verify/op.json
    python -m benchmarks.verification_operating_point --cache runs/verify/features.json --search

Re-run this whenever the model changes: the thresholds (Matcher options ``verify_*``, see
distillmatch_ros/verification.py) belong to a model.

Right pairs: every pair of the dev sets in ../shared/data (roadscene_homography,
roadscene_deform, m3svd_homography: exact ground truth) and every ``--m3svd-val-every``-th
m3svd_val frame (aligned, identity). Wrong pairs: the visible image of one pair with the
thermal image of a different scene of the same set (for m3svd_val, a different clip), seeded:
``--wrong-per-pair`` of them for each right pair of the npz sets (so that 1 % of a set's wrong
pairs is at least one pair), one for each m3svd_val pair. The matcher runs once
per pair with verification off (structure check on), the evidence (``verification.features``)
is kept, and ``verification.decide`` is applied with the options under test, so a threshold
search costs no network time. ``--cache`` keeps the evidence between runs.

``--prior truth`` runs each pair through ``Matcher.match_guided`` with the right pair's
ground-truth homography as prior, as a stream holding its rig's homography does: a wrong pair is
then a thermal frame of another scene under that prior (``--guided-band``: the band it matches in).

Reported: wrong-pair acceptance (should be <= 5 %), right-pair acceptance (>= 60 %), and the
homography error of the accepted right pairs (so that accepting means being right).
``--search`` grid-searches inlier count, inlier ratio and spread for the largest right-pair
acceptance with wrong-pair acceptance within ``--max-wrong``, choosing on even-numbered pairs
and reporting on the odd-numbered ones too (a held-out check).
"""
from __future__ import annotations

import argparse
import glob
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import DATA, machine_stamp, memoize_network, write_report
from distillmatch_ros import evaluation, verification

NPZ_SETS = ("roadscene_homography", "roadscene_deform", "m3svd_homography")


def right_pairs(data: Path, m3svd_val_every: int = 1):
    """(set, name, path) for every dev pair (every ``m3svd_val_every``-th m3svd_val frame)."""
    out = []
    for name in NPZ_SETS:
        for p in sorted(glob.glob(str(data / name / "*.npz"))):
            out.append((name, os.path.basename(p)[:-4], p))
    for p in sorted(glob.glob(str(data / "m3svd_val" / "visible" / "*.jpg")))[::max(1, m3svd_val_every)]:
        out.append(("m3svd_val", os.path.basename(p)[:-4], p))
    return out


def load(set_name: str, path: str):
    import cv2
    if set_name == "m3svd_val":
        vis = cv2.imread(path, cv2.IMREAD_COLOR)
        th = cv2.imread(path.replace("/visible/", "/thermal/"), cv2.IMREAD_GRAYSCALE)
        return vis, th, {"thermal": th, "H": np.diag([vis.shape[1] / th.shape[1], vis.shape[0] / th.shape[0], 1.0])}
    z = evaluation.load_pair_npz(path)
    th = z["thermal"]
    return z["visible"], th, z


def scene_of(set_name: str, name: str) -> str:
    """Frames of one M3SVD clip show one scene (names <clip>_<frame>); RoadScene names are scenes."""
    return name.rsplit("_", 1)[0] if set_name.startswith("m3svd") else name


def wrong_partners(pairs, i: int, rng, k: int = 1) -> list:
    """Indices of ``k`` pairs of the same set but other scenes (clips) than pair i."""
    s, n, _ = pairs[i]
    cands = [j for j, (s2, n2, _) in enumerate(pairs) if s2 == s and scene_of(s2, n2) != scene_of(s, n)]
    return [int(j) for j in rng.choice(cands, size=min(k, len(cands)), replace=False)]


def collect(matcher, pairs, rng, progress=True, wrong_per_pair=1, prior=False):
    """``prior``: each pair through ``matcher.match_guided`` with the right pair's ground-truth
    homography as prior (what a stream holds for its rig; a wrong pair is then a thermal frame of
    another scene under that prior); pairs without an exact homography are left out."""
    rows = []
    for i, (s, n, p) in enumerate(pairs):
        vis, th, gt = load(s, p)
        partners = wrong_partners(pairs, i, rng, wrong_per_pair if s in NPZ_SETS else 1)
        if prior and "H" not in gt:
            continue
        tests = [("right", th, None)] + [("wrong", load(pairs[j][0], pairs[j][2])[1], j) for j in partners]
        for kind, thermal, j in tests:
            t0 = time.perf_counter()
            r = matcher.match_guided(vis, thermal, gt["H"]) if prior else matcher.match(vis, thermal)
            sec = time.perf_counter() - t0
            f = dict(r.evidence) if r.evidence else verification.features(
                None, np.zeros(0, bool), np.zeros((0, 2), np.float32), np.zeros(0, np.float32),
                (thermal.shape[1], thermal.shape[0]), (vis.shape[1], vis.shape[0]))
            row = {"set": s, "name": n, "pair": i, "kind": kind, "sec": sec, "features": f,
                   "accepted": r.homography is not None if matcher.options["verify"] else None,
                   "reason": r.verification if not r.evidence else None,
                   "partner": pairs[j][1] if j is not None else None}
            if kind == "right":
                truth = evaluation.GroundTruth(gt)
                row["error_px"] = evaluation.probe_error(truth, r.homography) if r.homography is not None \
                    else float("inf")
            rows.append(row)
        if progress and i % 20 == 0:
            print(f"  {i + 1}/{len(pairs)} pairs", flush=True)
    return rows


def accept(rows, opt):
    """Whether each pair was accepted: as the matcher decided it (``opt`` None: its own options,
    recorded while it ran), else re-decided from the evidence with ``opt`` (a threshold search;
    with the matcher's several passes this is approximate, since which pass is returned depends
    on the decisions)."""
    if opt is None:
        return np.array([bool(r["accepted"]) for r in rows], bool)
    return np.array([verification.decide(_finite(r["features"]), opt).accepted for r in rows], bool)


def _finite(f):
    return {k: (float("inf") if v is None else v) for k, v in f.items()}


def report(rows, opt, label="", reason_opt=None):
    """Acceptance figures of ``rows`` under ``opt`` (None: the matcher's recorded decisions, with
    the rejection reasons re-derived under ``reason_opt``)."""
    reason_opt = opt if opt is not None else reason_opt
    right = [r for r in rows if r["kind"] == "right"]
    wrong = [r for r in rows if r["kind"] == "wrong"]
    ar, aw = accept(right, opt), accept(wrong, opt)
    errs = np.array([r["error_px"] if r["error_px"] is not None else np.inf for r in right])
    out = {"label": label, "right_pairs": len(right), "wrong_pairs": len(wrong),
           "right_acceptance": float(ar.mean()) if len(ar) else 0.0,
           "wrong_acceptance": float(aw.mean()) if len(aw) else 0.0,
           "right_acceptance_set_mean": set_mean(rows, opt, "right"),
           "wrong_acceptance_set_mean": set_mean(rows, opt, "wrong"),
           "accepted_right_error_median_px": float(np.median(errs[ar])) if ar.any() else None,
           "accepted_right_within_10px": float((errs[ar] < 10).mean()) if ar.any() else None,
           "rejected_right_within_10px": float((errs[~ar] < 10).mean()) if (~ar).any() else None,
           "per_set": {}}
    for s in sorted({r["set"] for r in rows}):
        rr = [r for r in right if r["set"] == s]
        ww = [r for r in wrong if r["set"] == s]
        out["per_set"][s] = {"right": len(rr), "right_acceptance": float(accept(rr, opt).mean()),
                             "wrong": len(ww), "wrong_acceptance": float(accept(ww, opt).mean())}
    reasons = {}
    for r, a in zip(wrong, aw, strict=True):
        if not a:
            why = verification.decide(_finite(r["features"]), reason_opt).reason.split(" (")[0].split(" 0")[0]
            reasons[why] = reasons.get(why, 0) + 1
    out["wrong_rejected_by"] = reasons
    return out


def set_mean(rows, opt, kind):
    """Acceptance of ``kind`` pairs averaged over the sets (each set weighs the same, so the
    160 easy m3svd_val pairs cannot hide a set where wrong pairs pass)."""
    sets = sorted({r["set"] for r in rows})
    return float(np.mean([accept([r for r in rows if r["set"] == s and r["kind"] == kind], opt).mean()
                          for s in sets]))


def search(rows, base, max_wrong):
    """Largest right acceptance with wrong acceptance <= max_wrong (pooled and averaged over
    sets), over a small grid of count, ratio, spread and score thresholds."""
    best = None
    grid = itertools.product([15, 20, 25, 30, 40], [0.1, 0.15, 0.2, 0.25, 0.3], [0.05, 0.1, 0.15, 0.2],
                             [0.0, 0.18, 0.2, 0.22])
    right = [r for r in rows if r["kind"] == "right"]
    wrong = [r for r in rows if r["kind"] == "wrong"]
    for k, ratio, spread, score in grid:
        opt = dict(base, verify_min_inliers=k, verify_min_inlier_ratio=ratio, verify_min_spread=spread,
                   verify_min_score=score)
        aw = max(accept(wrong, opt).mean(), set_mean(rows, opt, "wrong"))
        if aw > max_wrong:
            continue
        ar = min(accept(right, opt).mean(), set_mean(rows, opt, "right"))
        key = (ar, -aw, k, ratio, spread, score)
        if best is None or key > best[0]:
            best = (key, opt)
    return None if best is None else best[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint or shipped model name (default: shipped)")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--cache", default=None, help="evidence JSON: read if present, else written")
    ap.add_argument("--json", default=None, help="write the report here")
    ap.add_argument("--search", action="store_true", help="grid-search count/ratio/spread thresholds")
    ap.add_argument("--max-wrong", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--wrong-per-pair", type=int, default=5,
                    help="wrong pairs made from each right pair of the npz sets (m3svd_val: 1)")
    ap.add_argument("--m3svd-val-every", type=int, default=4, help="use every n-th m3svd_val frame")
    ap.add_argument("--prior", choices=("none", "truth"), default="none",
                    help="truth: match_guided with the right pair's ground-truth homography as prior (a stream's "
                    "held rig homography); the dense-truth set is left out")
    ap.add_argument("--guided-band", type=int, default=None, help="the matcher's guided_band option")
    ap.add_argument("--network-cache", default=None, metavar="DIR",
                    help="keep the network's outputs here (benchmarks.common.memoize_network)")
    args = ap.parse_args(argv)
    data = Path(args.data)
    if not data.is_dir():
        print(f"data folder {data} is absent: nothing to calibrate on (see ../shared/docs/DATA.md)")
        return 2
    import torch

    from distillmatch_ros.matcher import Matcher
    torch.set_num_threads(args.threads)
    matcher = Matcher.from_pretrained(args.model, backend=args.backend)
    if args.guided_band is not None:
        matcher.set_options(guided_band=args.guided_band)
    memoize_network(matcher, args.network_cache)
    base = dict(matcher.options)
    model_name = str(matcher.model_path)
    if args.cache and os.path.exists(args.cache):
        cached = json.load(open(args.cache))
        rows, model_name = cached["rows"], cached.get("model", model_name)
        print(f"evidence from {args.cache} ({len(rows)} pairs, model {model_name})")
    else:
        pairs = right_pairs(data, args.m3svd_val_every)
        print(f"{len(pairs)} right pairs, {args.wrong_per_pair} wrong pairs for each of the npz sets' ones, "
              f"model {model_name} ({matcher.backend})")
        if args.search:  # every pair's evidence, decided offline for each candidate threshold set
            matcher.set_options(verify=False)
        rows = collect(matcher, pairs, np.random.default_rng(args.seed), wrong_per_pair=args.wrong_per_pair,
                       prior=args.prior == "truth")
        if args.cache:
            os.makedirs(os.path.dirname(os.path.abspath(args.cache)), exist_ok=True)
            json.dump({"model": model_name, "rows": rows}, open(args.cache, "w"), default=_json_default)
    out = {**machine_stamp(detail=True), "model": model_name,
           "command": " ".join(["python -m benchmarks.verification_operating_point", *sys.argv[1:]]),
           "options": {k: base[k] for k in verification.DEFAULTS},
           "current": report(rows, None if rows and rows[0].get("accepted") is not None else base,
                             "current options", reason_opt=base)}
    if args.search:
        even = [r for r in rows if r["pair"] % 2 == 0]
        odd = [r for r in rows if r["pair"] % 2 == 1]
        chosen = search(even, base, args.max_wrong)
        if chosen is not None:
            out["searched_options"] = {k: chosen[k] for k in ("verify_min_inliers", "verify_min_inlier_ratio",
                                                             "verify_min_spread", "verify_min_score")}
            out["searched_on_even"] = report(even, chosen, "chosen on even pairs")
            out["searched_held_out_odd"] = report(odd, chosen, "held-out odd pairs")
            out["searched_all"] = report(rows, chosen, "all pairs")
    for key in ("current", "searched_on_even", "searched_held_out_odd", "searched_all"):
        if key in out:
            r = out[key]
            print(f"{r['label']:>22}: wrong accepted {r['wrong_acceptance']:.1%} of {r['wrong_pairs']} "
                  f"(set mean {r['wrong_acceptance_set_mean']:.1%}), right accepted {r['right_acceptance']:.1%} "
                  f"of {r['right_pairs']} (set mean {r['right_acceptance_set_mean']:.1%}), accepted right "
                  f"within 10 px {_pct(r['accepted_right_within_10px'])}")
    if "searched_options" in out:
        print("searched thresholds:", out["searched_options"])
    print("per set (current):", json.dumps(out["current"]["per_set"]))
    print("wrong pairs rejected by (current):", out["current"]["wrong_rejected_by"])
    write_report(out, args.json, show=False, default=_json_default)
    return 0


def _pct(x):
    return "n/a" if x is None else f"{x:.1%}"


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(type(o))


if __name__ == "__main__":
    sys.exit(main())
