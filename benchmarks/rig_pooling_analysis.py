"""Why does pooling the verified inliers of many frames of a rig stop at a few pixels?

    python -m benchmarks.rig_pooling_analysis BAG --gt-homography BAG.gt_homography.json --json out.json

Every synchronized pair of a rig bag (a known thermal -> visible homography, e.g. made with
``distillmatch make-bag --rig-homography``) is matched with the shipped model; the verified
inliers of all frames are compared with the ground truth:

* the mean residual (a bias that pooling cannot average away), overall and by image region;
* how many points each frame gives (does one frame dominate?) and what capping per frame does;
* the pooled fit after subtracting the measured global bias (an oracle: how much is bias);
* the dense refinement's correspondences (calibration.dense_correspondences): their errors
  and the fit they give.
Errors of fits are the protocol's mean corner error in thermal px; residuals in visible px.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from benchmarks.common import write_report
from distillmatch_ros import calibration as C
from distillmatch_ros import evaluation


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bag")
    ap.add_argument("--gt-homography", required=True)
    ap.add_argument("--visible-topic", default="/camera/visible/image_raw")
    ap.add_argument("--thermal-topic", default="/camera/thermal/image_raw")
    ap.add_argument("--model", default=None)
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(2)
    from distillmatch_ros.bag.io import BagReader
    from distillmatch_ros.bag.replay import _synchronized, load_gt_homography
    from distillmatch_ros.image_codec import thermal_to_numpy, visible_to_numpy
    from distillmatch_ros.matcher import Matcher
    from distillmatch_ros.preprocess import check_visible, normalize_thermal
    from distillmatch_ros.sync import ApproximateTimeSynchronizer

    gt = load_gt_homography(args.gt_homography)
    m = Matcher.from_pretrained(args.model, backend=args.backend)
    sync = ApproximateTimeSynchronizer(10, 0.05, streams=("visible", "thermal"))

    class _NoBar:
        def update(self, n):
            pass

    frames, size = [], None
    with BagReader(args.bag) as reader:
        for v, t, sv, _ in _synchronized(reader, sync, {args.visible_topic: "visible", args.thermal_topic: "thermal"},
                                         _NoBar()):
            vis, th = visible_to_numpy(v), thermal_to_numpy(t)
            size = (th.shape[1], th.shape[0])
            r = m.match(vis, th)
            ev = C.evidence_from_result(r, sv, normalize_thermal(th), size, check_visible(vis), keep_images=True)
            if ev is not None:
                frames.append(ev)
    truth = evaluation.GroundTruth.from_homography(gt, size)
    w, h = size
    tp = np.concatenate([f.thermal_points for f in frames])
    vp = np.concatenate([f.visible_points for f in frames])
    res = vp - C.project(gt, tp)
    out = {"frames_verified": len(frames), "inliers": int(len(tp)),
           "bias_px": np.round(res.mean(0), 2).tolist(),
           "median_residual_px": round(float(np.median(np.linalg.norm(res, axis=1))), 2), "by_region": {}}
    regions = {"left": tp[:, 0] < w / 4, "right": tp[:, 0] > 3 * w / 4, "top": tp[:, 1] < h / 4,
               "bottom": tp[:, 1] > 3 * h / 4,
               "centre": (abs(tp[:, 0] - w / 2) < w / 4) & (abs(tp[:, 1] - h / 2) < h / 4)}
    for name, sel in regions.items():
        out["by_region"][name] = {"n": int(sel.sum()), "bias_px": np.round(res[sel].mean(0), 2).tolist(),
                                  "median_px": round(float(np.median(np.linalg.norm(res[sel], axis=1))), 2)}
    out["points_per_frame"] = [len(f.scores) for f in frames]
    out["per_frame_bias_px"] = [np.round((f.visible_points - C.project(gt, f.thermal_points)).mean(0), 2).tolist()
                                for f in frames]
    H, _ = C.robust_fit(tp, vp, 3.0)
    out["pooled_all_points_error_px"] = round(evaluation.probe_error(truth, H), 2)
    out["pooled_capped_error_px"] = {}
    for cap in (30, 60, 150):
        a, b, _ = C.balanced_points(frames, cap)
        Hc, _ = C.robust_fit(a, b, 3.0)
        out["pooled_capped_error_px"][cap] = round(evaluation.probe_error(truth, Hc), 2)
    Hb, _ = C.robust_fit(tp, vp - res.mean(0), 3.0)
    out["pooled_minus_global_bias_error_px"] = round(evaluation.probe_error(truth, Hb), 2)
    a, b, _ = C.balanced_points(frames, 150)
    Hp, _ = C.robust_fit(a, b, 3.0)
    dt, dv = [], []
    for f in frames:
        x, y = C.dense_correspondences(Hp, f.thermal, f.visible)
        dt.append(x)
        dv.append(y)
    dt, dv = np.concatenate(dt), np.concatenate(dv)
    d = dv - C.project(gt, dt)
    Hd, _ = C.robust_fit(dt, dv, 2.0)
    out["dense"] = {"points": int(len(dt)), "median_error_px": round(float(np.median(np.linalg.norm(d, axis=1))), 2),
                    "within_2px": round(float((np.linalg.norm(d, axis=1) < 2).mean()), 3),
                    "bias_px": np.round(d.mean(0), 2).tolist(),
                    "fit_error_px": round(evaluation.probe_error(truth, Hd), 2)}
    write_report(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
