"""Matching accuracy as defined by the project's evaluation protocol: corner error of a MAGSAC
homography fitted to the matches, its AUC at 3/5/10 px, and match precision.

Every number this project reports about accuracy comes from here, so that our figures can be
put side by side with the peers' (measured with the shared reference script): the same
definitions, the same robust estimator, the same probe points.

Conventions: points are Nx2 pixel coordinates (x right, y down, pixel centres at integers);
ground truth maps *thermal* pixels to *visible* pixels; errors are expressed in thermal pixels
by dividing visible-pixel distances by the local visible/thermal scale of the ground truth.
"""
from __future__ import annotations

import glob
import os
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import cv2
import numpy as np

#: Reprojection error (thermal px) under which a match counts as correct.
CORRECT_PX = 3.0
#: AUC thresholds (thermal px) reported everywhere.
AUC_THRESHOLDS = (3, 5, 10)
#: Spacing and margin of the thermal probe grid used with dense ground truth.
GRID_STEP = 16
GRID_MARGIN = 8


def load_pair_npz(path: str) -> Dict[str, np.ndarray]:
    """Load one pair in the shared npz format, checking what the rest of this module relies on."""
    with np.load(path) as z:
        pair = {k: z[k] for k in z.files}
    for key in ("visible", "thermal"):
        if key not in pair:
            raise ValueError(f"{path}: pair file has no '{key}' array")
    if "H" not in pair and "grid" not in pair:
        raise ValueError(f"{path}: pair file has neither 'H' nor 'grid' ground truth")
    if "H" in pair and np.shape(pair["H"]) != (3, 3):
        raise ValueError(f"{path}: 'H' must be 3x3, got shape {np.shape(pair['H'])}")
    return pair


def project(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 3x3 homography to (N, 2) points (float64 out)."""
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return pts
    return cv2.perspectiveTransform(pts[:, None, :], np.asarray(H, np.float64))[:, 0, :]


def homography_scale(H: np.ndarray, width: int, height: int) -> float:
    """Visible pixels per thermal pixel at the thermal image centre.

    Defined as the square root of the area that the unit pixel step at the centre maps to
    (one-pixel steps along x and y), which is the protocol's local scale.
    """
    cx, cy = width / 2.0, height / 2.0
    p0, px, py = project(H, [[cx, cy], [cx + 1.0, cy], [cx, cy + 1.0]])
    jac = np.column_stack([px - p0, py - p0])
    return float(np.sqrt(abs(np.linalg.det(jac))))


def thermal_corners(width: int, height: int) -> np.ndarray:
    """The four corner pixel centres of a thermal image, clockwise from top-left."""
    return np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], np.float64)


def thermal_grid(width: int, height: int) -> np.ndarray:
    """Probe points every GRID_STEP px, GRID_MARGIN px away from the borders."""
    xs = np.arange(GRID_MARGIN, width - GRID_MARGIN, GRID_STEP)
    ys = np.arange(GRID_MARGIN, height - GRID_MARGIN, GRID_STEP)
    gx, gy = np.meshgrid(xs, ys)
    return np.column_stack([gx.ravel(), gy.ravel()]).astype(np.float64)


class GroundTruth:
    """Thermal -> visible ground truth of one pair: the mapping, its scale and its probes."""

    def __init__(self, gt: Dict[str, np.ndarray]):
        thermal = gt["thermal"]
        self.height, self.width = thermal.shape[:2]
        if "H" in gt:
            self.H: Optional[np.ndarray] = np.asarray(gt["H"], np.float64)
            self.grid = None
            self.scale = homography_scale(self.H, self.width, self.height)
            self.probes = thermal_corners(self.width, self.height)
        elif "grid" in gt:
            self.H = None
            self.grid = np.asarray(gt["grid"])
            self.scale = 1.0  # dense ground truth of these sets is on a common pixel scale
            self.probes = thermal_grid(self.width, self.height)
        else:
            raise ValueError("ground truth needs either 'H' (3x3) or 'grid' (HxWx2)")

    @classmethod
    def from_homography(cls, H: np.ndarray, thermal_size) -> "GroundTruth":
        """Ground truth of a rigid rig: one thermal -> visible H for a (width, height) thermal image."""
        w, h = thermal_size
        return cls({"thermal": np.broadcast_to(np.uint8(0), (int(h), int(w))), "H": H})

    def __call__(self, thermal_pts: np.ndarray) -> np.ndarray:
        """Visible image of thermal points (NaN where the dense ground truth is undefined)."""
        pts = np.asarray(thermal_pts, np.float64).reshape(-1, 2)
        if self.H is not None:
            return project(self.H, pts)
        # Dense ground truth is sampled at the nearest thermal pixel, clamped to the image.
        col = np.clip(np.rint(pts[:, 0]).astype(np.int64), 0, self.width - 1)
        row = np.clip(np.rint(pts[:, 1]).astype(np.int64), 0, self.height - 1)
        return self.grid[row, col].astype(np.float64)


def evaluate_pair(gt: Dict[str, np.ndarray], kv, kt, correct_px: float = CORRECT_PX) -> Dict[str, float]:
    """Score one pair's matches: returned count, correct count, precision and homography error.

    ``kv`` / ``kt`` are the matched visible / thermal points (Nx2). A match whose thermal point
    falls where dense ground truth is undefined counts as returned but not correct. The
    homography error is infinite when fewer than 4 matches are given or MAGSAC finds nothing.
    """
    truth = gt if isinstance(gt, GroundTruth) else GroundTruth(gt)
    kv = np.asarray(kv, np.float64).reshape(-1, 2)
    kt = np.asarray(kt, np.float64).reshape(-1, 2)
    correct = correct_matches(truth, kv, kt, correct_px)
    n, ncm = len(kv), int(correct.sum())
    return {"n": n, "ncm": ncm, "prec": float(ncm / n) if n else 0.0, "err": homography_error(truth, kv, kt)}


def correct_matches(gt, kv, kt, correct_px: float = CORRECT_PX) -> np.ndarray:
    """Which matches (N bool) lie within ``correct_px`` of the ground truth (normalised px);
    a thermal point where dense ground truth is undefined counts as wrong."""
    truth = gt if isinstance(gt, GroundTruth) else GroundTruth(gt)
    kv = np.asarray(kv, np.float64).reshape(-1, 2)
    kt = np.asarray(kt, np.float64).reshape(-1, 2)
    if len(kv) != len(kt):
        raise ValueError(f"visible and thermal point counts differ ({len(kv)} vs {len(kt)})")
    if not len(kv):
        return np.zeros(0, bool)
    reproj = np.linalg.norm(truth(kt) - kv, axis=1) / truth.scale
    with np.errstate(invalid="ignore"):
        return reproj < correct_px  # NaN compares False


def homography_error(truth: GroundTruth, kv: np.ndarray, kt: np.ndarray) -> float:
    """Mean probe error (thermal px) of a USAC_MAGSAC homography fitted to the matches."""
    if len(kv) < 4:
        return float("inf")
    H_est, _ = cv2.findHomography(kt, kv, cv2.USAC_MAGSAC, CORRECT_PX * truth.scale)
    if H_est is None:
        return float("inf")
    return probe_error(truth, H_est)


def probe_error(truth: GroundTruth, H_est: np.ndarray) -> float:
    """Mean distance (thermal px) between an estimate's and the truth's images of the probes."""
    if H_est is None:
        return float("inf")
    d = np.linalg.norm(project(H_est, truth.probes) - truth(truth.probes), axis=1) / truth.scale
    d = d[np.isfinite(d)]
    return float(d.mean()) if len(d) else float("inf")


def auc(errs: Iterable[float], t: float) -> float:
    """Area under the recall-vs-error curve up to ``t``, normalised to [0, 1].

    The curve rises by 1/N at each sorted error and is linearly interpolated between them
    (the convention of SuperGlue/LoFTR pose AUC); errors at or above ``t`` (and failures,
    as infinity) add nothing, but still count in N.
    """
    e = np.sort(np.asarray(list(errs), np.float64))
    n = len(e)
    if n == 0:
        return 0.0
    below = e[e < t]
    xs = np.concatenate([[0.0], below, [float(t)]])
    ys = np.concatenate([[0.0], np.arange(1, len(below) + 1) / n])
    ys = np.concatenate([ys, ys[-1:]])  # flat from the last error below t out to t
    area = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))
    return area / float(t)


def summarize(rows: Sequence[Dict[str, float]]) -> Dict[str, float]:
    """Pool per-pair rows into the set figures: AUC@3/5/10, precision@3, mean NCM, median error."""
    errs = [r["err"] for r in rows]
    returned = sum(r["n"] for r in rows)
    out = {"pairs": len(rows)}
    for t in AUC_THRESHOLDS:
        out[f"auc{t}"] = auc(errs, t)
    out["prec3"] = float(sum(r["ncm"] for r in rows) / max(returned, 1))
    out["ncm"] = float(np.mean([r["ncm"] for r in rows])) if rows else 0.0
    out["median_err"] = float(np.median(errs)) if rows else float("inf")
    secs = [r["sec"] for r in rows if "sec" in r]
    if secs:
        out["sec"] = float(np.median(secs))
    return out


def _points_of(result):
    """Accept a MatchResult, (kv, kt) or (kv, kt, seconds) from a match function."""
    if hasattr(result, "visible_points"):
        return result.visible_points, result.thermal_points
    return result[0], result[1]


def evaluate_matcher(match_fn: Callable, set_dir: str, limit: Optional[int] = None) -> Dict:
    """Run ``match_fn(visible, thermal)`` over every ``*.npz`` pair of a folder and summarize.

    ``match_fn`` may return a MatchResult or a (kv, kt[, seconds]) tuple; the wall time of the
    call alone is recorded per pair. Returns ``summarize(rows)`` plus the rows and file names.
    """
    files = sorted(glob.glob(os.path.join(set_dir, "*.npz")))
    if limit is not None:
        files = files[:limit]
    if not files:
        raise FileNotFoundError(f"no *.npz pairs in {set_dir}")
    rows: List[Dict[str, float]] = []
    for path in files:
        pair = load_pair_npz(path)
        t0 = time.perf_counter()
        result = match_fn(pair["visible"], pair["thermal"])
        sec = time.perf_counter() - t0
        kv, kt = _points_of(result)
        row = evaluate_pair(pair, kv, kt)
        row["sec"] = sec
        row["file"] = os.path.basename(path)
        rows.append(row)
    summary = summarize(rows)
    summary["rows"] = rows
    return summary
