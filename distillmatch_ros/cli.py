"""The ``distillmatch`` command: ``match`` (one pair), ``models``, plus the recording-side
subcommands (``bag-eval``, ``calibrate``, ``make-bag``, ``demo``) registered by
:mod:`distillmatch_ros.bag.cli`.

Every value is checked as the command line is read (:mod:`distillmatch_ros.arguments`: numbers
by their Option, output paths up front); a bad one, like an expected failure later (unreadable
image, bad model file, unusable backend), prints one ``error:`` line and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np

from . import arguments
from .errors import DistillMatchError
from .fusion import FUSION_MODES
from .matcher import OPTION_SPECS


def read_image(path: str, what: str) -> np.ndarray:
    """Read an image keeping its bit depth (16-bit PNG/TIFF thermal stays uint16)."""
    if not Path(path).is_file():
        raise DistillMatchError(f"{what} image not found: {path}")
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DistillMatchError(f"cannot decode {what} image {path} (not an image OpenCV can read)")
    if what == "thermal" and img.ndim == 3:
        img = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2GRAY)  # 8-bit thermal saved as colour JPEG
    if what == "visible" and img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if what == "visible" and img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return img


def cmd_match(args) -> int:
    from .fusion import draw_matches, fuse
    from .matcher import Matcher
    vis = read_image(args.visible, "visible")
    th = read_image(args.thermal, "thermal")
    matcher = Matcher.from_pretrained(args.model, backend=args.backend, device=args.device)
    if args.threshold is not None:
        matcher.set_options(match_threshold=args.threshold)
    r = matcher.match(vis, th)
    out = {
        "visible": args.visible, "thermal": args.thermal, "backend": matcher.backend,
        "num_matches": len(r), "num_inliers": r.num_inliers,
        "homography": None if r.homography is None else r.homography.tolist(),
        "verification": r.verification, "alignment_confidence": r.confidence,
        "visible_points": r.visible_points.tolist(), "thermal_points": r.thermal_points.tolist(),
        "scores": r.scores.tolist(), "inliers": r.inliers.astype(int).tolist(), "timings_ms": r.timings_ms,
    }
    images = {}  # made before anything is written, so that a failure leaves no half result
    if args.fused:
        images[args.fused] = fuse(vis, th, r.homography, mode=args.fusion_mode)
    if args.viz:
        images[args.viz] = draw_matches(vis, th, r)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out))
    for path, img in images.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(path, img):
            raise DistillMatchError(f"could not write {path}")
    h = f"none ({r.verification})" if r.homography is None else f"found (confidence {r.confidence:.2f})"
    print(f"{len(r)} matches, {r.num_inliers} inliers, homography {h}, "
          f"{r.timings_ms['total']:.0f} ms ({matcher.backend}) -> {args.out}")
    return 0


def cmd_models(args) -> int:
    from . import model_files
    print(model_files.describe())
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .bag.cli import add_subcommands
    ap = arguments.Parser(prog="distillmatch", description="Visible/thermal matching (DistillMatch).")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("match", help="match one visible/thermal pair",
                       description="Match a visible and a thermal image; write matches and the "
                       "thermal->visible homography as JSON, optionally a fused image and a match picture.")
    p.add_argument("visible", type=arguments.text())
    p.add_argument("thermal", type=arguments.text())
    p.add_argument("--out", required=True, type=arguments.output(), help="result JSON")
    p.add_argument("--fused", default=None, type=arguments.output(image=True),
                   help="write the fused image (PNG/JPEG)")
    p.add_argument("--fusion-mode", default=FUSION_MODES[0], choices=FUSION_MODES)
    p.add_argument("--viz", default=None, type=arguments.output(image=True), help="write a side-by-side match picture")
    arguments.add_matcher_args(p)
    p.add_argument("--threshold", type=arguments.number(OPTION_SPECS["match_threshold"]), default=None,
                   help="match confidence threshold in [0, 1] (default: the model's own)")
    p.set_defaults(func=cmd_match)
    p = sub.add_parser("models", help="list where shipped models are looked for and what was found",
                       description="Print the model search order (see distillmatch_ros/model_files.py) "
                       "and the model files in each folder.")
    p.set_defaults(func=cmd_models)
    add_subcommands(sub)
    return ap


def run(args) -> int:
    """Call a parsed subcommand, turning the package's expected errors into one clear line."""
    try:
        return args.func(args)
    except DistillMatchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def main(argv: Optional[List[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # a bad command line (exit 2) or --help (0), as a return value
        return e.code if isinstance(e.code, int) else 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
