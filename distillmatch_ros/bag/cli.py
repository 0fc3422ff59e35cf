"""`distillmatch bag-eval | calibrate | make-bag | demo`: the recording-side subcommands.

Registered into the package's ``distillmatch`` command (distillmatch_ros/cli.py) by
:func:`add_subcommands`. Expected failures (bad bag, topic, encoding, ground truth, model)
raise the package's errors, which the command prints as one ``error:`` line (exit status 2).
Defaults, types and ranges come from the settings' own definitions (sync, PipelineConfig,
calibration, make_bag, replay, demo), checked as the command line is read
(:mod:`distillmatch_ros.arguments`), so a replay pairs and processes frames as the node does.
"""
from __future__ import annotations

import argparse
import os

from .. import calibration, sync
from ..arguments import add_matcher_args, number, output, output_problem, size, text
from ..errors import DistillMatchError
from ..options import by_name
from ..pipeline import PipelineConfig
from . import demo, make_bag, replay
from .make_bag import THERMAL_TOPIC, VISIBLE_TOPIC

_SYNC = by_name(sync.OPTIONS)
_PIPELINE = by_name(PipelineConfig.options())


def _add_sync_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--slop", type=number(_SYNC["slop"]), default=_SYNC["slop"].default,
                   help="synchronizer slop: largest stamp difference in a pair [s] (the node's default)")
    p.add_argument("--queue-size", type=number(_SYNC["queue_size"]), default=_SYNC["queue_size"].default,
                   help="messages kept per camera")


def _add_topic_args(p: argparse.ArgumentParser, help_visible=None, help_thermal=None) -> None:
    p.add_argument("--visible-topic", default=VISIBLE_TOPIC, type=text(), help=help_visible)
    p.add_argument("--thermal-topic", default=THERMAL_TOPIC, type=text(), help=help_thermal)


def add_subcommands(subparsers) -> None:
    """Add bag-eval, make-bag and demo to an argparse ``add_subparsers()`` object."""
    p = subparsers.add_parser("bag-eval", help="replay a ROS 2 bag through the node's pipeline and report",
                              description="Replay a ROS 2 bag (sqlite3 or mcap) through the node's "
                              "synchronizer and per-pair pipeline; write DIR/report.json, report.md, plots.")
    p.add_argument("bag", type=text(), help="bag folder (metadata.yaml + .db3/.mcap) or a .mcap file")
    _add_topic_args(p, "Image or CompressedImage topic (TOPIC/compressed is used when only that is recorded)",
                    "as --visible-topic")
    p.add_argument("--gt-homography", default=None, type=text(), help="JSON 3x3 thermal->visible matrix of the rig")
    p.add_argument("--report", required=True, metavar="DIR", type=output(folder=True))
    p.add_argument("--out-bag", default=None, type=output(folder=True, new=True),
                   help="write correspondences, homography and fused images here (must not exist)")
    p.add_argument("--out-storage", default="sqlite3", choices=["sqlite3", "mcap"])
    p.add_argument("--rig-mode", default="on" if PipelineConfig.rig_mode else "off", choices=["on", "off"],
                   help="on: hold a filtered homography and re-match at --match-rate (node default)")
    p.add_argument("--match-rate", type=number(_PIPELINE["match_rate_hz"]), default=None,
                   help="re-match rate in rig mode [Hz]; 0 = every pair")
    p.add_argument("--rig-calibration", default=None, metavar="YAML", type=text(),
                   help="rig mode: fuse with this calibration (distillmatch calibrate) and report drift against it")
    _add_sync_args(p)
    p.add_argument("--examples", type=number(replay.EXAMPLES), default=replay.EXAMPLES.default,
                   help="example fused frames to save")
    p.add_argument("--skip-bad-pairs", action="store_true", help="count undecodable pairs instead of stopping")
    p.add_argument("--no-progress", action="store_true")
    add_matcher_args(p)
    p.set_defaults(func=cmd_bag_eval)

    p = subparsers.add_parser("calibrate", help="calibrate a rigid rig's thermal->visible homography from a bag",
                              description="Pool verified correspondences over many synchronized pairs of a "
                              "bag (different content, all image regions), fit one homography robustly, refine "
                              "it densely and estimate its corner uncertainty; write a YAML rig calibration.")
    p.add_argument("bag", type=text(), help="bag folder (metadata.yaml + .db3/.mcap) or a .mcap file")
    _add_topic_args(p)
    p.add_argument("--out", required=True, type=output(), help="calibration YAML to write (e.g. rig.yaml)")
    frames = by_name(calibration.OPTIONS)["frames"]
    p.add_argument("--frames", type=number(frames), default=frames.default,
                   help="frames to pool (chosen for content and coverage)")
    p.add_argument("--gt-homography", default=None, type=text(),
                   help="JSON 3x3 thermal->visible truth: report the error")
    p.add_argument("--report", default=None, metavar="DIR", type=output(folder=True),
                   help="write report.json and report.md here")
    p.add_argument("--no-refine", action="store_true", help="skip the dense refinement (faster, less precise)")
    p.add_argument("--no-guided", action="store_true",
                   help="skip the second, guided match of each pair (the first pooled fit as prior)")
    _add_sync_args(p)
    p.add_argument("--no-progress", action="store_true")
    add_matcher_args(p)
    p.set_defaults(func=cmd_calibrate)

    p = subparsers.add_parser("make-bag", help="make a two-camera bag from pairs with a rig homography",
                              description="Write a bag from visible/thermal pairs (folder or npz) with "
                              "per-camera rates, a rig homography on the thermal side and chosen encodings.")
    p.add_argument("out", type=output(folder=True, new=True), help="output bag folder (must not exist)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pairs-dir", type=text(),
                     help="folder with visible/ and thermal/ (aligned pairs, same file stems; 16-bit thermal kept)")
    src.add_argument("--npz", nargs="+", type=text(), help="npz pairs with 'H' ground truth (shared format)")
    o = make_bag.SPECS
    p.add_argument("--limit", type=number(o["limit"]), default=None, help="most pairs to read (default: all)")
    p.add_argument("--storage", default="sqlite3", choices=["sqlite3", "mcap"])
    p.add_argument("--visible-rate", type=number(o["visible_rate"]), default=o["visible_rate"].default,
                   help="visible camera rate [Hz]")
    p.add_argument("--thermal-rate", type=number(o["thermal_rate"]), default=o["thermal_rate"].default,
                   help="thermal camera rate [Hz]")
    p.add_argument("--rig-homography", default=None, type=text(),
                   help="JSON 3x3 thermal->visible (default: a plausible rig)")
    p.add_argument("--visible-size", type=size(o["visible_size"]), default=None, metavar="WxH",
                   help="visible image size (default: the first visible image's)")
    p.add_argument("--thermal-size", type=size(o["thermal_size"]), default=None, metavar="WxH",
                   help="thermal image size (default: the visible size)")
    p.add_argument("--visible-encoding", default="bgr8", choices=["bgr8", "rgb8", "mono8", "mono16"])
    p.add_argument("--thermal-encoding", default="mono16", choices=["mono8", "mono16", "16UC1", "32FC1"])
    _add_topic_args(p)
    p.add_argument("--compressed", action="store_true",
                   help="record sensor_msgs/CompressedImage on TOPIC/compressed as image_transport does: "
                   "JPEG visible, PNG thermal (16 bits kept)")
    p.add_argument("--jpeg-quality", type=number(o["jpeg_quality"]), default=o["jpeg_quality"].default,
                   help="JPEG quality with --compressed (image_transport's default)")
    p.add_argument("--gt-out", default=None, type=output(),
                   help="where to write the ground truth (default: OUT.gt_homography.json)")
    p.set_defaults(func=cmd_make_bag)

    p = subparsers.add_parser("demo", help="make a sample recording and evaluate it (no data or network needed)",
                              description="Generate a visible/thermal recording from photos bundled with "
                              "scikit-image, replay it through the node's pipeline, and write the report.")
    p.add_argument("--out", required=True, metavar="DIR", type=output(folder=True))
    p.add_argument("--storage", default="mcap", choices=["sqlite3", "mcap"])
    p.add_argument("--views", type=number(demo.VIEWS), default=demo.VIEWS.default, help="views per photo (4 photos)")
    p.add_argument("--v2i-gan", default=None, metavar="NAME_OR_PATH", type=text(),
                   help="V2I-GAN generator making the thermal side (default: the shipped v2i_gan)")
    p.add_argument("--simple-thermal", action="store_true",
                   help="make the thermal side with a crude colour-based stand-in instead of the V2I-GAN")
    p.add_argument("--no-progress", action="store_true")
    add_matcher_args(p)
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
    return cfg.validated()


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
    _print_summary(s, args.report, args.examples)
    return 0


def cmd_calibrate(args) -> int:
    from .calibrate import calibrate_bag
    from .io import BagReader
    from .replay import load_gt_homography

    gt = load_gt_homography(args.gt_homography) if args.gt_homography else None
    with BagReader(args.bag) as reader:  # cheap checks before the model loads
        reader.require_image_topics([args.visible_topic, args.thermal_topic])
    matcher, name = _matcher(args)
    r = calibrate_bag(args.bag, matcher, args.visible_topic, args.thermal_topic, args.out, frames=args.frames,
                      gt_homography=gt, report_dir=args.report, refine=not args.no_refine, queue_size=args.queue_size,
                      slop=args.slop, progress=not args.no_progress, matcher_name=name, guided=not args.no_guided)
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


def _print_summary(s, report_dir, examples: int) -> None:
    lat = s["latency_ms"]
    line = (f"pairs {s['pairs_evaluated']} (dropped {s['pairs_dropped']}), matches {s['matches_mean']:.0f}, "
            f"inliers {s['inliers_mean']:.0f}, latency p50 {lat['p50'] or 0:.0f} ms p95 {lat['p95'] or 0:.0f} ms")
    if "auc" in s:
        a = s["auc"]
        line += f", AUC@3/5/10 {a['3']:.3f}/{a['5']:.3f}/{a['10']:.3f}"
    print(line)
    fused = examples > 0 and os.path.isdir(os.path.join(report_dir, "fused"))
    print(f"report: {os.path.join(report_dir, 'report.md')} (+ report.json, plots{', fused/' if fused else ''})")


def cmd_make_bag(args) -> int:
    import numpy as np

    from .make_bag import make_bag, pairs_from_folder, pairs_from_npz, write_gt_json
    from .replay import load_gt_homography

    gt_out = args.gt_out or args.out.rstrip("/") + ".gt_homography.json"
    problem = output_problem(gt_out)
    if problem:
        raise DistillMatchError(f"ground truth file: {problem}")
    pairs = pairs_from_folder(args.pairs_dir, args.limit) if args.pairs_dir else pairs_from_npz(args.npz, args.limit)
    rig = load_gt_homography(args.rig_homography) if args.rig_homography else None
    info = make_bag(args.out, pairs, storage=args.storage, visible_rate=args.visible_rate,
                    thermal_rate=args.thermal_rate, rig_homography=rig, visible_size=args.visible_size,
                    thermal_size=args.thermal_size, visible_encoding=args.visible_encoding,
                    thermal_encoding=args.thermal_encoding, visible_topic=args.visible_topic,
                    thermal_topic=args.thermal_topic, progress=True, compressed=args.compressed,
                    jpeg_quality=args.jpeg_quality)
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
