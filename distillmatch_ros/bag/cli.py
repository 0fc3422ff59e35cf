"""`distillmatch bag-eval | calibrate | make-bag | demo`: the recording-side subcommands.

Registered into the package's ``distillmatch`` command (distillmatch_ros/cli.py) by
:func:`add_subcommands`. Expected failures (bad bag, topic, encoding, ground truth, model)
raise the package's errors, which the command prints as one ``error:`` line (exit status 2).
Defaults come from the settings' own definitions (sync, PipelineConfig, calibration), so a
replay pairs and processes frames as the node does.
"""
from __future__ import annotations

import argparse
import os

from ..backends import BACKENDS
from ..calibration import DEFAULTS as CALIBRATION_DEFAULTS
from ..errors import DistillMatchError
from ..pipeline import PipelineConfig
from ..sync import DEFAULTS as SYNC_DEFAULTS
from .io import BagError
from .make_bag import THERMAL_TOPIC, VISIBLE_TOPIC


def _size(text: str):
    try:
        w, h = (int(x) for x in text.lower().split("x"))
        return w, h
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {text!r}") from None


def _add_matcher_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="checkpoint path or shipped model name (default: shipped default)")
    p.add_argument("--backend", default="auto", choices=("auto",) + BACKENDS)
    p.add_argument("--device", default=None)


def _add_sync_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--slop", type=float, default=SYNC_DEFAULTS["slop"],
                   help="synchronizer slop: largest stamp difference in a pair [s] (the node's default)")
    p.add_argument("--queue-size", type=int, default=SYNC_DEFAULTS["queue_size"], help="messages kept per camera")


def add_subcommands(subparsers) -> None:
    """Add bag-eval, make-bag and demo to an argparse ``add_subparsers()`` object."""
    p = subparsers.add_parser("bag-eval", help="replay a ROS 2 bag through the node's pipeline and report",
                              description="Replay a ROS 2 bag (sqlite3 or mcap) through the node's "
                              "synchronizer and per-pair pipeline; write DIR/report.json, report.md, plots.")
    p.add_argument("bag", help="bag folder (metadata.yaml + .db3/.mcap) or a .mcap file")
    p.add_argument("--visible-topic", default=VISIBLE_TOPIC,
                   help="Image or CompressedImage topic (TOPIC/compressed is used when only that is recorded)")
    p.add_argument("--thermal-topic", default=THERMAL_TOPIC, help="as --visible-topic")
    p.add_argument("--gt-homography", default=None, help="JSON 3x3 thermal->visible matrix of the rig")
    p.add_argument("--report", required=True, metavar="DIR")
    p.add_argument("--out-bag", default=None, help="write correspondences, homography and fused images here")
    p.add_argument("--out-storage", default="sqlite3", choices=["sqlite3", "mcap"])
    p.add_argument("--rig-mode", default="on" if PipelineConfig.rig_mode else "off", choices=["on", "off"],
                   help="on: hold a filtered homography and re-match at --match-rate (node default)")
    p.add_argument("--match-rate", type=float, default=None, help="re-match rate in rig mode [Hz]; 0 = every pair")
    p.add_argument("--rig-calibration", default=None, metavar="YAML",
                   help="rig mode: fuse with this calibration (distillmatch calibrate) and report drift against it")
    _add_sync_args(p)
    p.add_argument("--examples", type=int, default=4, help="example fused frames to save")
    p.add_argument("--skip-bad-pairs", action="store_true", help="count undecodable pairs instead of stopping")
    p.add_argument("--no-progress", action="store_true")
    _add_matcher_args(p)
    p.set_defaults(func=cmd_bag_eval)

    p = subparsers.add_parser("calibrate", help="calibrate a rigid rig's thermal->visible homography from a bag",
                              description="Pool verified correspondences over many synchronized pairs of a "
                              "bag (different content, all image regions), fit one homography robustly, refine "
                              "it densely and estimate its corner uncertainty; write a YAML rig calibration.")
    p.add_argument("bag", help="bag folder (metadata.yaml + .db3/.mcap) or a .mcap file")
    p.add_argument("--visible-topic", default=VISIBLE_TOPIC)
    p.add_argument("--thermal-topic", default=THERMAL_TOPIC)
    p.add_argument("--out", required=True, help="calibration YAML to write (e.g. rig.yaml)")
    p.add_argument("--frames", type=int, default=CALIBRATION_DEFAULTS["frames"],
                   help="frames to pool (chosen for content and coverage)")
    p.add_argument("--gt-homography", default=None, help="JSON 3x3 thermal->visible truth: report the error")
    p.add_argument("--report", default=None, metavar="DIR", help="write report.json and report.md here")
    p.add_argument("--no-refine", action="store_true", help="skip the dense refinement (faster, less precise)")
    _add_sync_args(p)
    p.add_argument("--no-progress", action="store_true")
    _add_matcher_args(p)
    p.set_defaults(func=cmd_calibrate)

    p = subparsers.add_parser("make-bag", help="make a two-camera bag from pairs with a rig homography",
                              description="Write a bag from visible/thermal pairs (folder or npz) with "
                              "per-camera rates, a rig homography on the thermal side and chosen encodings.")
    p.add_argument("out", help="output bag folder (must not exist)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pairs-dir", help="folder with visible/ and thermal/ (aligned pairs, same file stems)")
    src.add_argument("--npz", nargs="+", help="npz pairs with 'H' ground truth (shared format)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--storage", default="sqlite3", choices=["sqlite3", "mcap"])
    p.add_argument("--visible-rate", type=float, default=30.0)
    p.add_argument("--thermal-rate", type=float, default=9.0)
    p.add_argument("--rig-homography", default=None, help="JSON 3x3 thermal->visible (default: a plausible rig)")
    p.add_argument("--visible-size", type=_size, default=None, metavar="WxH")
    p.add_argument("--thermal-size", type=_size, default=None, metavar="WxH")
    p.add_argument("--visible-encoding", default="bgr8", choices=["bgr8", "rgb8", "mono8", "mono16"])
    p.add_argument("--thermal-encoding", default="mono16", choices=["mono8", "mono16", "16UC1", "32FC1"])
    p.add_argument("--visible-topic", default=VISIBLE_TOPIC)
    p.add_argument("--thermal-topic", default=THERMAL_TOPIC)
    p.add_argument("--compressed", action="store_true",
                   help="record sensor_msgs/CompressedImage on TOPIC/compressed as image_transport does: "
                   "JPEG visible, PNG thermal (16 bits kept)")
    p.add_argument("--jpeg-quality", type=int, default=95,
                   help="JPEG quality with --compressed (image_transport's default)")
    p.add_argument("--gt-out", default=None, help="where to write the ground truth (default: OUT.gt_homography.json)")
    p.set_defaults(func=cmd_make_bag)

    p = subparsers.add_parser("demo", help="make a sample recording and evaluate it (no data or network needed)",
                              description="Generate a visible/thermal recording from photos bundled with "
                              "scikit-image, replay it through the node's pipeline, and write the report.")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--storage", default="mcap", choices=["sqlite3", "mcap"])
    p.add_argument("--views", type=int, default=3, help="views per photo (4 photos)")
    p.add_argument("--v2i-gan", default=None, metavar="NAME_OR_PATH",
                   help="V2I-GAN generator making the thermal side (default: the shipped v2i_gan)")
    p.add_argument("--simple-thermal", action="store_true",
                   help="make the thermal side with a crude colour-based stand-in instead of the V2I-GAN")
    p.add_argument("--no-progress", action="store_true")
    _add_matcher_args(p)
    p.set_defaults(func=cmd_demo)


def _matcher(args):
    from ..matcher import Matcher

    m = Matcher.from_pretrained(args.model, backend=args.backend, device=args.device)
    name = m.model_card.get("name") if isinstance(m.model_card, dict) else None
    return m, f"{name or os.path.basename(str(m.model_path))} ({m.backend})"


def _pipeline_config(args) -> PipelineConfig:
    cfg = PipelineConfig(rig_mode=args.rig_mode == "on")
    if args.match_rate is not None:
        cfg.match_rate_hz = args.match_rate
    try:
        return cfg.validated()
    except ValueError as exc:
        raise DistillMatchError(f"--match-rate: {exc}") from None


def cmd_bag_eval(args) -> int:
    from .io import BagReader
    from .replay import bag_eval, load_gt_homography

    gt = load_gt_homography(args.gt_homography) if args.gt_homography else None
    calibration = None
    if args.rig_calibration:
        from ..calibration import load_calibration
        calibration = load_calibration(args.rig_calibration)
    with BagReader(args.bag) as reader:  # cheap checks before the model loads
        topics = reader.require_image_topics([args.visible_topic, args.thermal_topic])
        kinds = reader.topics()
    for asked, used in zip((args.visible_topic, args.thermal_topic), topics, strict=True):
        note = "" if asked == used else f" (no {asked} in the bag)"
        print(f"reading {used} [{kinds[used][0]}]{note}")
    matcher, name = _matcher(args)
    s = bag_eval(args.bag, matcher, args.visible_topic, args.thermal_topic, args.report, gt_homography=gt,
                 out_bag=args.out_bag, out_storage=args.out_storage, config=_pipeline_config(args),
                 queue_size=args.queue_size, slop=args.slop, examples=args.examples,
                 progress=not args.no_progress, skip_bad_pairs=args.skip_bad_pairs, matcher_name=name,
                 calibration=calibration)
    _print_summary(s, args.report)
    return 0


def cmd_calibrate(args) -> int:
    from .calibrate import calibrate_bag
    from .io import BagReader
    from .replay import load_gt_homography

    if args.frames < 2:
        raise BagError("--frames must be at least 2")
    gt = load_gt_homography(args.gt_homography) if args.gt_homography else None
    with BagReader(args.bag) as reader:  # cheap checks before the model loads
        reader.require_image_topics([args.visible_topic, args.thermal_topic])
    matcher, name = _matcher(args)
    r = calibrate_bag(args.bag, matcher, args.visible_topic, args.thermal_topic, args.out, frames=args.frames,
                      gt_homography=gt, report_dir=args.report, refine=not args.no_refine, queue_size=args.queue_size,
                      slop=args.slop, progress=not args.no_progress, matcher_name=name)
    c = r["calibration"]
    unc = c["corner_uncertainty_px"].get("mean")
    line = (f"calibrated from {c['frames_used']} frames, {c['inliers_used']} inliers; corner uncertainty "
            f"{'n/a' if unc is None else f'{unc:.2f} px'}")
    if "calibrated_error_px" in r:
        line += (f"; error vs ground truth {r['calibrated_error_px']:.2f} px (per-pair median "
                 f"{r['per_pair_error_median_px']:.2f} px)")
    print(line)
    if not c["certain"]:
        print(f"calibration: uncertain ({c['uncertain_because']}); the node will not switch to it. Record "
              "more frames of different, structured scenes covering the whole image, or check the rig.")
    print(f"wrote {args.out}" + (f"; report: {os.path.join(args.report, 'report.md')}" if args.report else ""))
    return 0


def _print_summary(s, report_dir) -> None:
    lat = s["latency_ms"]
    line = (f"pairs {s['pairs_evaluated']} (dropped {s['pairs_dropped']}), matches {s['matches_mean']:.0f}, "
            f"inliers {s['inliers_mean']:.0f}, latency p50 {lat['p50'] or 0:.0f} ms p95 {lat['p95'] or 0:.0f} ms")
    if "auc" in s:
        a = s["auc"]
        line += f", AUC@3/5/10 {a['3']:.3f}/{a['5']:.3f}/{a['10']:.3f}"
    print(line)
    print(f"report: {os.path.join(report_dir, 'report.md')} (+ report.json, plots, fused/)")


def cmd_make_bag(args) -> int:
    import numpy as np

    from .make_bag import make_bag, pairs_from_folder, pairs_from_npz, write_gt_json
    from .replay import load_gt_homography

    pairs = pairs_from_folder(args.pairs_dir, args.limit) if args.pairs_dir else pairs_from_npz(args.npz, args.limit)
    rig = load_gt_homography(args.rig_homography) if args.rig_homography else None
    info = make_bag(args.out, pairs, storage=args.storage, visible_rate=args.visible_rate,
                    thermal_rate=args.thermal_rate, rig_homography=rig, visible_size=args.visible_size,
                    thermal_size=args.thermal_size, visible_encoding=args.visible_encoding,
                    thermal_encoding=args.thermal_encoding, visible_topic=args.visible_topic,
                    thermal_topic=args.thermal_topic, progress=True, compressed=args.compressed,
                    jpeg_quality=args.jpeg_quality)
    gt_out = args.gt_out or args.out.rstrip("/") + ".gt_homography.json"
    write_gt_json(gt_out, np.array(info["rig_homography"]))
    print(f"wrote {args.out} ({info['storage']}, {info['transport']}): {info['frames']['visible']} visible "
          f"frames on {info['visible_topic']} + {info['frames']['thermal']} thermal on {info['thermal_topic']}; "
          f"ground truth {gt_out}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo
    from .sample import SIMPLE

    if args.simple_thermal and args.v2i_gan:
        raise DistillMatchError("--simple-thermal and --v2i-gan exclude each other")
    run_demo(args.out, model=args.model, backend=args.backend, device=args.device, storage=args.storage,
             views=args.views, progress=not args.no_progress,
             thermal_source=SIMPLE if args.simple_thermal else args.v2i_gan)
    return 0
