"""The main job: `distillmatch demo --out DIR`, end to end from nothing but installed packages.

Steps: bundled photos -> pseudo-infrared (V2I-GAN) -> a rig homography into a 320x256 mono16
thermal camera at 9 Hz beside a 640x480 bgr8 visible camera at 30 Hz -> an mcap bag ->
bag-eval with the known ground truth -> report, plots and fused frames in DIR.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from typing import Optional

import numpy as np

from ..options import Option
from .io import BagError
from .make_bag import make_bag, write_gt_json
from .sample import THERMAL_SIZE, VISIBLE_SIZE, sample_pairs, write_sample_inputs

#: demo's --views: views cropped from each of the four bundled photos.
VIEWS = Option("views", 3, "Views per photo (4 photos)", range=(1, 20))


def run_demo(out: str, model: Optional[str] = None, backend: str = "auto", device: Optional[str] = None,
             storage: str = "mcap", views: int = VIEWS.default, progress: bool = True, matcher=None,
             thermal_source: Optional[str] = None) -> dict:
    """Write DIR/recording (bag + ground truth + inputs), DIR/report and DIR/output_bag.

    ``thermal_source``: V2I-GAN name or file (default: the shipped ``v2i_gan``) or ``"simple"``
    for the crude stand-in; a missing generator is an error, never a silent substitution.
    """
    from ..pipeline import PipelineConfig
    from .replay import bag_eval

    problem = VIEWS.problem(views)
    if problem:
        raise BagError(problem)
    t0 = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    bag = os.path.join(out, "recording")
    out_bag = os.path.join(out, "output_bag")
    for old in (bag, out_bag):  # the demo owns these names inside DIR: rerunning replaces them
        if os.path.isdir(old) and os.path.exists(os.path.join(old, "metadata.yaml")):
            shutil.rmtree(old)
    print("1/3 making the sample recording from bundled photos ...", flush=True)
    pairs, how = sample_pairs(VISIBLE_SIZE, views, source=thermal_source)
    write_sample_inputs(os.path.join(out, "inputs"), pairs)
    info = make_bag(bag, pairs, storage=storage, visible_rate=30.0, thermal_rate=9.0,
                    visible_size=VISIBLE_SIZE, thermal_size=THERMAL_SIZE, visible_encoding="bgr8",
                    thermal_encoding="mono16", progress=progress)
    gt_path = os.path.join(out, "gt_homography.json")
    H = np.array(info["rig_homography"])
    write_gt_json(gt_path, H)
    print(f"    {len(pairs)} scenes, thermal from: {how}", flush=True)

    print("2/3 loading the matcher ...", flush=True)
    name = "given matcher"
    if matcher is None:
        from ..matcher import Matcher

        matcher = Matcher.from_pretrained(model, backend=backend, device=device)
        card = matcher.model_card if isinstance(matcher.model_card, dict) else {}
        name = f"{card.get('name') or os.path.basename(str(matcher.model_path))} ({matcher.backend})"
    print("3/3 replaying the recording through the node's pipeline (bag-eval) ...", flush=True)
    report = os.path.join(out, "report")
    # Rig mode as on a robot, but re-matching every pair: each pair is a new scene here.
    cfg = PipelineConfig(rig_mode=True, match_rate_hz=0.0)
    summary = bag_eval(bag, matcher, info["visible_topic"], info["thermal_topic"], report, gt_homography=H,
                       out_bag=out_bag, config=cfg, examples=4, progress=progress, matcher_name=name)
    summary["info"]["demo"] = {"thermal_source": how, "seconds": round(time.perf_counter() - t0, 1),
                               "photos": "scikit-image bundled data (public domain / CC0)"}
    with open(os.path.join(report, "report.json"), "w") as f:
        json.dump(summary, f, indent=1, allow_nan=False)
    a, lat, pa = summary["auc"], summary["latency_ms"], summary["published_auc"]
    print(f"done in {time.perf_counter() - t0:.0f} s: {summary['pairs_evaluated']} pairs, "
          f"matches {summary['matches_mean']:.0f}, inliers {summary['inliers_mean']:.0f}, "
          f"AUC@3/5/10 per pair {a['3']:.3f}/{a['5']:.3f}/{a['10']:.3f}, published (rig mode, pooled) "
          f"{pa['3']:.3f}/{pa['5']:.3f}/{pa['10']:.3f}, latency p50 {lat['p50']:.0f} ms")
    print(f"report:  {os.path.join(report, 'report.md')}")
    print(f"picture: {os.path.join(report, 'fused_examples.jpg')}")
    return summary
