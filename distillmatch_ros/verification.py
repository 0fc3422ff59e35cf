"""Deciding whether a pair's homography is supported, and refusing frames without structure.

Why this exists: a robust fit (MAGSAC) finds *some* homography on almost any set of matches.
Visible and thermal frames of different scenes gave one 39 times in 40 with the shipped model,
so a homography alone says nothing. This module turns the evidence of one match call into
an accept / reject decision with a reason and an alignment confidence, all ROS-free.

Two stages:

* :func:`structure_map`: before the network. The network sees ``2*x - 1``; a black frame is
  a constant -1 whose only "features" are the convolutions' zero padding at the image border
  and the coarse stage's position encoding, both identical in the two images, so the matcher
  matches the border cells to themselves with scores up to 0.72 (measured: 30 matches, all
  within ~1 px of identity, all on the image border). A frame (or a region) with no local
  contrast carries no evidence, so the matcher does not run on it and drops matches that
  land in such regions.
* :func:`verify`: after the robust fit. Counts and ratio of inliers, their spread over the
  thermal image (convex-hull area), the scores of the inliers, and the plausibility of the
  geometry (scale and rotation against the nominal stretch between the two images, anisotropy,
  a fold-free corner quadrilateral, overlap with the visible image).

Every threshold is a :class:`~distillmatch_ros.Matcher` option (``OPTIONS`` below), checked by
the Matcher, and calibrated by ``benchmarks/verification_operating_point.py``, which
must be re-run whenever the model changes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import cv2
import numpy as np

from .options import Option, defaults

#: The robust fit whose inliers the verification judges (Matcher options; the node's parameters).
FIT_OPTIONS: Tuple[Option, ...] = (
    Option("ransac_threshold", 3.0, "Homography inlier threshold (USAC MAGSAC) [thermal px; scaled by the "
           "visible/thermal stretch]", range=(0.1, 100.0)),
    Option("ransac_confidence", 0.999, "Homography fit: RANSAC confidence", range=(0.0, 1.0)),
    Option("ransac_max_iters", 2000, "Homography fit: most RANSAC iterations", range=(1, 1000000)),
)
FIT_DEFAULTS: Dict[str, Any] = defaults(FIT_OPTIONS)

#: The verification and structure settings (Matcher options; the node's parameters).
OPTIONS: Tuple[Option, ...] = (
    Option("verify", True, "Verify each homography (inliers, spread, geometry); false = accept MAGSAC's"),
    Option("structure_cell", 8, "Structure is measured in cells of this size [working px]", range=(2, 64)),
    Option("structure_min_std", 3.0, "A cell has contrast when its grey-level std reaches this",
           range=(0.0, 128.0)),
    Option("min_structure", 0.05, "Fewest image cells with contrast (fraction) before the network runs",
           range=(0.0, 1.0)),
    Option("verify_min_inliers", 30, "Verification: fewest inliers", range=(4, 100000)),
    Option("verify_min_inlier_ratio", 0.10, "Verification: fewest inliers per match", range=(0.0, 1.0)),
    Option("verify_guided_min_inlier_ratio", 0.175, "Verification of a guided match (the pair aligned by a "
           "prior first): fewest inliers per match. Aligned right pairs give 0.19 and more; wrong pairs of "
           "similar street scenes, aligned by a wrong prior, 0.12-0.16", range=(0.0, 1.0)),
    Option("verify_min_spread", 0.05, "Verification: smallest inlier convex hull (fraction of the thermal image)",
           range=(0.0, 1.0)),
    Option("verify_min_score", 0.0, "Verification: lowest median inlier score", range=(0.0, 1.0)),
    Option("verify_scale_range", 2.0, "Verification: scale within [1/r, r] of the nominal stretch",
           range=(1.0, 100.0)),
    Option("verify_max_rotation_deg", 30.0, "Verification: largest rotation [deg]", range=(0.0, 180.0)),
    Option("verify_max_anisotropy", 1.6, "Verification: largest anisotropy (singular value ratio)",
           range=(1.0, 100.0)),
    Option("verify_min_overlap", 0.2, "Verification: smallest fraction of the mapped thermal image inside "
           "the visible one", range=(0.0, 1.0)),
)
DEFAULTS: Dict[str, Any] = defaults(OPTIONS)


@dataclass
class Verdict:
    """The decision about one pair's homography."""

    accepted: bool
    reason: str  # "ok" or why not, e.g. "too few inliers (9 < 20)"
    confidence: float  # 0..1 (0 when rejected; see :func:`confidence`)
    features: Dict[str, float] = field(default_factory=dict)


# -- structure (before the network) ---------------------------------------------------------
def structure_map(gray: np.ndarray, cell: int = 8) -> np.ndarray:
    """Grey-level standard deviation of every ``cell`` x ``cell`` block (rows x cols of cells).

    Computed on the working-size image the network sees. Blocks that do not fit at the right
    or bottom edge are dropped (the network's 1/8 grid does the same).
    """
    cell = int(cell)
    h, w = gray.shape[:2]
    gh, gw = h // cell, w // cell
    if gh == 0 or gw == 0:
        return np.zeros((0, 0), np.float32)
    blocks = gray[:gh * cell, :gw * cell].astype(np.float32).reshape(gh, cell, gw, cell)
    return blocks.std(axis=(1, 3))


def textured_fraction(std_map: np.ndarray, min_std: float) -> float:
    return float((std_map >= min_std).mean()) if std_map.size else 0.0


def in_textured_cells(points: np.ndarray, std_map: np.ndarray, cell: int, min_std: float) -> np.ndarray:
    """(N,) bool: the cell under each working-pixel point (or a 4-neighbour) is textured.

    A neighbour counts because a match on an edge sits between a flat cell and a textured one.
    """
    if len(points) == 0:
        return np.zeros(0, bool)
    textured = std_map >= min_std
    grown = textured.copy()
    grown[1:] |= textured[:-1]
    grown[:-1] |= textured[1:]
    grown[:, 1:] |= textured[:, :-1]
    grown[:, :-1] |= textured[:, 1:]
    gh, gw = textured.shape
    c = np.clip((points[:, 0] / cell).astype(np.int64), 0, gw - 1)
    r = np.clip((points[:, 1] / cell).astype(np.int64), 0, gh - 1)
    return grown[r, c]


# -- verification (after the robust fit) ----------------------------------------------------
def nominal_stretch(thermal_size: Tuple[int, int], visible_size: Tuple[int, int]) -> np.ndarray:
    """The 2x2 linear map that stretches the thermal image onto the visible one."""
    (tw, th), (vw, vh) = thermal_size, visible_size
    return np.diag([vw / tw, vh / th])


def stretch_factor(thermal_size: Tuple[int, int], visible_size: Tuple[int, int]) -> float:
    """Visible px per thermal px of the nominal stretch (geometric mean of the two axes).

    Thresholds are stated in thermal px, as the evaluation protocol states errors: a matcher's
    error is a fraction of the grid it sees, so a 3 px threshold in *visible* px is half as wide
    on a visible camera of twice the thermal resolution, and its inliers halve for no reason."""
    (tw, th), (vw, vh) = thermal_size, visible_size
    return math.sqrt(max(vw * vh, 1) / max(tw * th, 1))


def robust_homography(thermal_pts: np.ndarray, visible_pts: np.ndarray, thermal_size: Tuple[int, int],
                      visible_size: Tuple[int, int], opt: Dict[str, Any]) -> Tuple[Optional[np.ndarray], np.ndarray]:
    """The matcher's USAC_MAGSAC thermal -> visible fit, with its threshold of
    ``ransac_threshold`` thermal px (see :func:`stretch_factor`); (H or None, inlier mask)."""
    thr = float(opt["ransac_threshold"]) * stretch_factor(thermal_size, visible_size)
    return magsac_fit(thermal_pts, visible_pts, thr, int(opt["ransac_max_iters"]), float(opt["ransac_confidence"]))


def magsac_fit(thermal_pts: np.ndarray, visible_pts: np.ndarray, threshold: float, max_iters: int,
               confidence: float) -> Tuple[Optional[np.ndarray], np.ndarray]:
    """OpenCV's USAC_MAGSAC thermal -> visible fit at ``threshold`` visible px; (H or None, inlier
    mask). The one robust fit of the package: the matcher and the rig calibration both call it."""
    n = len(thermal_pts)
    if n < 4:
        return None, np.zeros(n, bool)
    H, mask = cv2.findHomography(np.asarray(thermal_pts, np.float64), np.asarray(visible_pts, np.float64),
                                 cv2.USAC_MAGSAC, threshold, maxIters=max_iters, confidence=confidence)
    if H is None or mask is None or not np.isfinite(H).all():
        return None, np.zeros(n, bool)
    return H.astype(np.float64), mask.ravel().astype(bool)


def local_jacobian(H: np.ndarray, x: float, y: float) -> np.ndarray:
    """2x2 derivative of the homography at thermal point (x, y)."""
    p = H @ np.array([x, y, 1.0])
    w = p[2]
    return (H[:2, :2] * w - np.outer(p[:2], H[2, :2])) / (w * w)


def geometry_features(H: np.ndarray, thermal_size: Tuple[int, int],
                      visible_size: Tuple[int, int]) -> Dict[str, float]:
    """Scale, rotation and anisotropy at the centre (relative to the nominal stretch), whether
    the corners fold, and how much of the mapped thermal image lies inside the visible one."""
    tw, th = thermal_size
    vw, vh = visible_size
    corners = np.array([[0, 0], [tw - 1, 0], [tw - 1, th - 1], [0, th - 1]], np.float64)
    out = {"scale": float("nan"), "rotation_deg": float("nan"), "anisotropy": float("inf"),
           "folded": 1.0, "overlap": 0.0}
    hom = np.c_[corners, np.ones(4)] @ H.T
    if np.any(hom[:, 2] <= 1e-9 * np.abs(hom).max()):  # a corner at or behind the horizon
        return out
    J = local_jacobian(H, (tw - 1) / 2.0, (th - 1) / 2.0) @ np.linalg.inv(nominal_stretch(thermal_size, visible_size))
    det = float(np.linalg.det(J))
    sv = np.linalg.svd(J, compute_uv=False)
    out["scale"] = math.sqrt(abs(det))
    out["rotation_deg"] = math.degrees(math.atan2(J[1, 0] - J[0, 1], J[0, 0] + J[1, 1]))
    out["anisotropy"] = float(sv[0] / sv[1]) if sv[1] > 1e-12 else float("inf")
    dets = [np.linalg.det(local_jacobian(H, x, y)) for x, y in corners]
    out["folded"] = float(det <= 0 or any(d <= 0 for d in dets))
    quad = (hom[:, :2] / hom[:, 2:3]).astype(np.float32)
    area = abs(cv2.contourArea(quad))
    if area > 0 and out["folded"] == 0.0:
        frame = np.array([[0, 0], [vw, 0], [vw, vh], [0, vh]], np.float32)
        inter, _ = cv2.intersectConvexConvex(quad, frame)
        out["overlap"] = float(inter / area)
    return out


def hull_fraction(points: np.ndarray, width: int, height: int) -> float:
    """Convex-hull area of points as a fraction of a width x height image."""
    if len(points) < 3:
        return 0.0
    hull = cv2.convexHull(np.asarray(points, np.float32))
    return float(cv2.contourArea(hull) / max(width * height, 1))


def features(H: Optional[np.ndarray], inliers: np.ndarray, thermal_points: np.ndarray, scores: np.ndarray,
             thermal_size: Tuple[int, int], visible_size: Tuple[int, int]) -> Dict[str, float]:
    """Everything :func:`decide` looks at, as plain floats (the calibration script keeps these)."""
    n = int(len(scores))
    k = int(inliers.sum()) if H is not None else 0
    f = {"matches": float(n), "inliers": float(k), "inlier_ratio": k / n if n else 0.0,
         "spread": hull_fraction(thermal_points[inliers], *thermal_size) if k else 0.0,
         "inlier_score": float(np.median(scores[inliers])) if k else 0.0}
    if H is not None:
        f.update(geometry_features(np.asarray(H, np.float64), thermal_size, visible_size))
    else:
        f.update({"scale": float("nan"), "rotation_deg": float("nan"), "anisotropy": float("inf"),
                  "folded": 1.0, "overlap": 0.0})
    return f


def decide(f: Dict[str, float], opt: Dict[str, Any]) -> Verdict:
    """Accept or reject from :func:`features`; the first failed test is the reason."""
    if f["matches"] < 4 or not math.isfinite(f["scale"]):
        return Verdict(False, "no homography could be fitted", 0.0, f)
    r = float(opt["verify_scale_range"])
    tests = (
        (f["inliers"] >= opt["verify_min_inliers"],
         f"too few inliers ({f['inliers']:.0f} < {opt['verify_min_inliers']})"),
        (f["inlier_ratio"] >= opt["verify_min_inlier_ratio"],
         f"inlier ratio {f['inlier_ratio']:.2f} < {opt['verify_min_inlier_ratio']}"),
        (f["spread"] >= opt["verify_min_spread"],
         f"inliers cover {f['spread']:.2f} of the thermal image < {opt['verify_min_spread']}"),
        (f["inlier_score"] >= opt["verify_min_score"],
         f"median inlier score {f['inlier_score']:.2f} < {opt['verify_min_score']}"),
        (f["folded"] == 0.0, "the homography folds the thermal image"),
        (1.0 / r <= f["scale"] <= r, f"implausible scale {f['scale']:.2f} x the nominal stretch"),
        (abs(f["rotation_deg"]) <= opt["verify_max_rotation_deg"],
         f"implausible rotation {f['rotation_deg']:.0f} deg"),
        (f["anisotropy"] <= opt["verify_max_anisotropy"], f"implausible anisotropy {f['anisotropy']:.2f}"),
        (f["overlap"] >= opt["verify_min_overlap"],
         f"only {f['overlap']:.2f} of the thermal image maps into the visible one"),
    )
    for ok, why in tests:
        if not ok:
            return Verdict(False, why, 0.0, f)
    return Verdict(True, "ok", confidence(f, opt), f)


def confidence(f: Dict[str, float], opt: Dict[str, Any]) -> float:
    """Alignment confidence in [0, 1]: how far past its threshold the weakest evidence is.

    Each of inlier count, inlier ratio and spread scores 0 at its threshold and 1 at twice it
    (a ramp); the confidence is their geometric mean. 0 for a rejected homography.
    """
    def ramp(x, t):
        t = max(float(t), 1e-9)
        return float(np.clip((x - t) / t, 0.0, 1.0))
    parts = [ramp(f["inliers"], opt["verify_min_inliers"]), ramp(f["inlier_ratio"], opt["verify_min_inlier_ratio"]),
             ramp(f["spread"], opt["verify_min_spread"])]
    return float(np.prod([max(p, 1e-3) for p in parts]) ** (1.0 / len(parts)))
