"""Where a checkpoint's localisation error comes from: each matching stage, measured separately.

    python -m benchmarks.fine_level_probe models/distillmatch_tiny.pt --set roadscene_homography,m3svd_homography

1. Stage errors on a val set: the returned matches' error (the evaluation protocol's units, thermal px)
   when the thermal point is taken after the coarse level (cell centre), the 1/4 window, the
   1/2 window, and the sub-pixel refiner, and each stage's gain over the one before. A fine
   level that has learned lowers the error. Works for both fine stages ("window", "cross").
2. Window sharpness on identical images (the visible image matched with itself, ground-truth
   cells given): the mean spread (max - min) of each window's logits and how often its argmax
   is the centre. Even with no modality gap, a level whose logits barely vary cannot localise.
"""
import argparse
import glob
from pathlib import Path

import cv2
import numpy as np
import torch

from benchmarks.common import DATA, write_report
from distillmatch_ros.evaluation import GroundTruth, load_pair_npz
from distillmatch_ros.matcher import Matcher, scale_points

STAGES = (("coarse cell", "coarse_thermal"), ("1/4 window", "fine4_thermal"), ("1/2 window", "fine2_thermal"),
          ("sub-pixel (returned)", "thermal_points"))


def stage_errors(m: Matcher, files, threshold: float):
    errs = {name: [] for name, _ in STAGES}
    for f in files:
        pair = load_pair_npz(f)
        truth = GroundTruth(pair)
        vis, th, tv, tt = m.prepare(pair["visible"], pair["thermal"])
        with torch.no_grad():
            out = m.model(torch.from_numpy(tv), torch.from_numpy(tt))
        keep = (out["valid"][0] & (out["scores"][0] >= threshold)).numpy()
        for name, key in STAGES:
            # Only the returned stage moves the visible point; earlier ones keep its cell centre.
            pv = out["visible_points" if key == "thermal_points" else "coarse_visible"][0].numpy()[keep]
            kv = scale_points(pv, m.input_size, vis.shape)
            kt = scale_points(out[key][0].numpy()[keep], m.input_size, th.shape)
            e = np.linalg.norm(truth(kt) - kv, axis=1) / truth.scale
            errs[name].append(e[np.isfinite(e)])
    report, prev = {}, None
    for name, per_pair in errs.items():
        e = np.concatenate(per_pair)
        report[name] = {"median_px": float(np.median(e)), "under_1.5px": float(np.mean(e < 1.5)),
                        "under_3px": float(np.mean(e < 3)), "under_8px": float(np.mean(e < 8))}
        # Each stage's contribution: how much it lowered the median error of the stage before.
        report[name]["median_gain_px"] = 0.0 if prev is None else prev - report[name]["median_px"]
        prev = report[name]["median_px"]
    return report


def window_sharpness(m: Matcher, files):
    w, h = m.input_size
    gw, gh = w // 8, h // 8
    rows = {"1/4 window": [], "1/2 window": []}
    for f in files:
        vis = load_pair_npz(f)["visible"]
        gray = cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY) if vis.ndim == 3 else vis
        small = cv2.resize(gray, (w, h), interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(small.astype(np.float32) / 255.0)[None, None]
        idx = torch.arange(gw + 1, gw * gh - gw - 1, 3).unsqueeze(0)  # interior cells
        with torch.no_grad():
            out = m.model(x, x, coarse_pairs=(idx, idx))
        for name, key in (("1/4 window", "fine4_logits"), ("1/2 window", "fine2_logits")):
            lg = out[key][0]
            centre = lg.shape[-1] // 2
            rows[name].append(((lg.max(-1).values - lg.min(-1).values).mean().item(),
                               (lg.argmax(-1) == centre).float().mean().item()))
    return {name: {"logit_spread": float(np.mean([r[0] for r in v])),
                   "argmax_at_centre": float(np.mean([r[1] for r in v]))} for name, v in rows.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--set", default="roadscene_homography", help="npz set(s), comma-separated")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--threshold", type=float, default=None, help="default: the checkpoint's")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(2)
    m = Matcher(a.checkpoint, backend="torch")
    thr = a.threshold if a.threshold is not None else float(m.options["match_threshold"])
    report = {"checkpoint": a.checkpoint, "threshold": thr, "fine_stage": m.model.config["fine_stage"], "sets": {}}
    for name in a.set.split(","):
        files = sorted(glob.glob(str(Path(a.data) / name / "*.npz")))
        if not files:
            raise SystemExit(f"no *.npz pairs in {Path(a.data) / name}")
        report["sets"][name] = {"stage_errors": stage_errors(m, files, thr),
                                "identical_image_windows": window_sharpness(m, files)}
    write_report(report, a.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
