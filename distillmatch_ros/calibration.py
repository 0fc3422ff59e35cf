"""Rigid-rig calibration: one thermal -> visible homography from many verified frames (ROS-free).

Why pooling: on a rigid rig the homography is the same in every frame, so the inliers of many
frames can be fitted together. It helps only when the frames show *different* content: the
matcher's error on the same content repeats from frame to frame (measured on consecutive frames
of one rig, BENCHMARKS.md). So :class:`FramePool` keeps a frame only when it is new (its thermal thumbnail is
unlike every kept one) or covers image regions the pool lacks, and :func:`fit_pooled` balances
frames so that none dominates (at most ``per_frame_cap`` points each, spread over the frame).

Why a dense refinement (:func:`refine_dense`): pooling averages the matcher's random error
but not its bias, which every frame shares (the evaluation notes trace it to the fine stage).
The visible image is warped into the thermal frame by the pooled fit and a modality-robust,
orientation-of-gradient descriptor (CFOG-like: per-orientation gradient energy, smoothed,
normalised across orientations) is matched by template search at a grid of thermal points;
those displacements, pooled over frames and fitted robustly, correct the homography. The
work is in thermal px, and the first step searches at half resolution as far as the pooled
fit's residuals say it must (8-24 px): a search of a fixed 8 *visible* px could not reach a
6 px error on a visible camera twice as fine, and changed nothing there.

Why it can say "uncertain": a bootstrap over frames cannot see a bias that every frame
shares, and a calibration that claims 2 px while 7 px off is worse than none. The
uncertainty (:func:`combined_uncertainty`) adds checks that can see one: the dense method
(no network) restarted from another start, and, when it does not settle, its disagreement
with the matcher's fit. Without the refinement nothing independent of the matcher checks the
bias, so the result is marked uncertain; the node does not switch to an uncertain one.

Used by ``distillmatch calibrate`` (bag), bag-eval's and the node's rig mode (pooled
evidence, without the dense step) and the node's ``~/calibrate`` service.
"""
from __future__ import annotations

import datetime
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .errors import DistillMatchError
from .evaluation import homography_scale, project, thermal_corners
from .options import Option, defaults
from .verification import magsac_fit

Size = Tuple[int, int]  # (width, height)


class CalibrationError(DistillMatchError, RuntimeError):
    """A calibration cannot be computed, or a calibration file cannot be used."""


# -- what one frame contributes -------------------------------------------------------------
@dataclass
class FrameEvidence:
    """The verified inliers of one pair, with what frame selection needs."""

    stamp_ns: int
    thermal_points: np.ndarray  # (N, 2) float64, inliers only
    visible_points: np.ndarray  # (N, 2) float64
    scores: np.ndarray  # (N,)
    thumb: np.ndarray  # small normalised thermal thumbnail (content signature)
    cells: np.ndarray  # bool grid: thermal image cells holding an inlier
    thermal: Optional[np.ndarray] = None  # uint8 thermal (for the dense refinement), optional
    visible: Optional[np.ndarray] = None  # uint8 gray visible, optional


#: Settings of a calibration run (``distillmatch calibrate``; the node's ~/calibrate parameters).
OPTIONS: Tuple[Option, ...] = (
    Option("frames", 20, "~/calibrate: verified pairs to pool", range=(2, 1000), ros_name="calibration_frames"),
    Option("refine", True, "~/calibrate: dense refinement (about a second a frame, in a helper thread)",
           ros_name="calibration_refine"),
)
DEFAULTS: Dict[str, Any] = defaults(OPTIONS)

THUMB = (16, 12)
GRID = (8, 6)


def thumbnail(gray: np.ndarray) -> np.ndarray:
    """A 16x12 zero-mean, unit-norm thumbnail: frames with the same content look alike."""
    t = cv2.resize(np.asarray(gray, np.float32), THUMB, interpolation=cv2.INTER_AREA).ravel()
    t -= t.mean()
    n = float(np.linalg.norm(t))
    return t / n if n > 1e-6 else t


def coverage_cells(points: np.ndarray, size: Size) -> np.ndarray:
    w, h = size
    g = np.zeros((GRID[1], GRID[0]), bool)
    if len(points):
        c = np.clip((points[:, 0] / w * GRID[0]).astype(int), 0, GRID[0] - 1)
        r = np.clip((points[:, 1] / h * GRID[1]).astype(int), 0, GRID[1] - 1)
        g[r, c] = True
    return g


def evidence_from_result(result: Any, stamp_ns: int, thermal_gray: np.ndarray, thermal_size: Size,
                         visible_gray: Optional[np.ndarray] = None, keep_images: bool = False
                         ) -> Optional[FrameEvidence]:
    """FrameEvidence of a verified MatchResult (None when it has no verified homography)."""
    if result.homography is None or not result.inliers.any():
        return None
    inl = result.inliers
    tp = np.asarray(result.thermal_points, np.float64)[inl]
    return FrameEvidence(int(stamp_ns), tp, np.asarray(result.visible_points, np.float64)[inl],
                         np.asarray(result.scores, np.float32)[inl], thumbnail(thermal_gray),
                         coverage_cells(tp, thermal_size),
                         np.asarray(thermal_gray) if keep_images else None,
                         np.asarray(visible_gray) if keep_images and visible_gray is not None else None)


def prior_of(frames: Sequence[FrameEvidence], thermal_size: Size, visible_size: Size) -> np.ndarray:
    """The pooled fit of verified frames without refinement or uncertainty: the prior of a
    guided pass only has to be within the network's reach (a few px)."""
    return fit_pooled(frames, thermal_size, visible_size, FitOptions(refine=False, bootstrap=0)).homography


def guided_pass(pairs: Sequence[Tuple[int, np.ndarray, np.ndarray, np.ndarray]], match_guided: Any,
                prior: np.ndarray, thermal_size: Size, keep_images: bool = True):
    """Match pairs again with ``prior`` (``Matcher.match_guided``): yields (MatchResult,
    FrameEvidence or None) per pair of (stamp_ns, visible gray, thermal, thermal gray).

    Why: the network sees each pair nearly aligned, whatever the rig's rotation, zoom and
    resolution ratio, so pairs it could not verify alone are verified, and each frame's inliers
    are more precise (BENCHMARKS.md, issue 19). ``distillmatch calibrate`` and the node's
    ~/calibrate both take their evidence from this pass."""
    for stamp_ns, vis, th, th8 in pairs:
        res = match_guided(vis, th, prior)
        yield res, evidence_from_result(res, stamp_ns, th8, thermal_size, vis, keep_images=keep_images)


class FramePool:
    """Frames of one rig, kept only when they add new content or new image regions.

    ``min_novelty``: a frame whose thumbnail correlates above ``1 - min_novelty`` with a kept
    frame's, and which covers no new cell, is a repeat. ``max_frames``: when full, the frame
    whose removal loses the least (most similar to another, fewest points) is dropped.
    """

    def __init__(self, max_frames: int = 30, min_novelty: float = 0.05):
        self.max_frames, self.min_novelty = int(max_frames), float(min_novelty)
        self.frames: List[FrameEvidence] = []
        self.offered = 0
        self.repeats = 0

    def __len__(self) -> int:
        return len(self.frames)

    def similarity(self, ev: FrameEvidence) -> float:
        if not self.frames:
            return -1.0
        return float(max(float(ev.thumb @ f.thumb) for f in self.frames))

    def covered(self) -> np.ndarray:
        g = np.zeros((GRID[1], GRID[0]), bool)
        for f in self.frames:
            g |= f.cells
        return g

    def add(self, ev: Optional[FrameEvidence]) -> bool:
        """Offer a frame; True when kept."""
        if ev is None:
            return False
        self.offered += 1
        new_cells = int((ev.cells & ~self.covered()).sum()) if self.frames else int(ev.cells.sum())
        if self.frames and self.similarity(ev) > 1.0 - self.min_novelty and new_cells == 0:
            self.repeats += 1
            return False
        self.frames.append(ev)
        if len(self.frames) > self.max_frames:
            self._drop_one()
        return True

    def _drop_one(self) -> None:
        thumbs = np.stack([f.thumb for f in self.frames])
        sim = thumbs @ thumbs.T
        np.fill_diagonal(sim, -1.0)
        redundancy = sim.max(axis=1) - 1e-4 * np.array([len(f.scores) for f in self.frames])
        del self.frames[int(np.argmax(redundancy))]

    def clear(self) -> None:
        self.frames.clear()


def select_frames(frames: Sequence[FrameEvidence], n: int) -> List[FrameEvidence]:
    """Greedy choice of ``n`` frames: new image cells first, then the least similar content."""
    frames = list(frames)
    if len(frames) <= n:
        return frames
    chosen: List[FrameEvidence] = []
    covered = np.zeros((GRID[1], GRID[0]), bool)
    left = frames[:]
    while left and len(chosen) < n:
        def gain(f, covered=covered):
            new = int((f.cells & ~covered).sum())
            sim = max((float(f.thumb @ c.thumb) for c in chosen), default=-1.0)
            return (new, -sim, len(f.scores))
        best = max(left, key=gain)
        chosen.append(best)
        covered |= best.cells
        left.remove(best)
    return sorted(chosen, key=lambda f: f.stamp_ns)


# -- fitting ---------------------------------------------------------------------------------
def balanced_points(frames: Sequence[FrameEvidence], per_frame_cap: int, seed: int = 0):
    """Pooled (thermal, visible, frame index) with at most ``per_frame_cap`` points a frame,
    taken evenly over the frame's coverage cells so no frame and no region dominates."""
    rng = np.random.default_rng(seed)
    tp, vp, idx = [], [], []
    for k, f in enumerate(frames):
        n = len(f.thermal_points)
        take = np.arange(n)
        if n > per_frame_cap:
            # round-robin over cells: shuffle, then order by rank within the cell
            cell = (f.thermal_points[:, 0] // 40).astype(int) * 1000 + (f.thermal_points[:, 1] // 40).astype(int)
            order = rng.permutation(n)
            rank = np.zeros(n, int)
            seen: Dict[int, int] = {}
            for i in order:
                rank[i] = seen.get(cell[i], 0)
                seen[cell[i]] = rank[i] + 1
            take = order[np.argsort(rank[order], kind="stable")][:per_frame_cap]
        tp.append(f.thermal_points[take])
        vp.append(f.visible_points[take])
        idx.append(np.full(len(take), k))
    if not tp:
        return np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0, int)
    return np.concatenate(tp), np.concatenate(vp), np.concatenate(idx)


def robust_fit(tp: np.ndarray, vp: np.ndarray, threshold: float) -> Tuple[Optional[np.ndarray], np.ndarray]:
    """USAC_MAGSAC thermal -> visible fit of pooled points (more iterations than a single pair's
    fit, since a calibration runs once); (H normalised to H[2,2] = 1 or None, inlier mask)."""
    H, mask = magsac_fit(tp, vp, threshold, max_iters=10000, confidence=0.9999)
    return (None if H is None else H / H[2, 2]), mask


def weighted_dlt(tp: np.ndarray, vp: np.ndarray, w: np.ndarray) -> Optional[np.ndarray]:
    """Homography minimising the weighted algebraic error (Hartley-normalised DLT)."""
    if len(tp) < 4:
        return None

    def norm(p):
        c = p.mean(axis=0)
        s = math.sqrt(2) / max(float(np.mean(np.linalg.norm(p - c, axis=1))), 1e-9)
        return np.array([[s, 0, -s * c[0]], [0, s, -s * c[1]], [0, 0, 1.0]])

    Tt, Tv = norm(tp), norm(vp)
    a = tp @ Tt[:2, :2].T + Tt[:2, 2]
    b = vp @ Tv[:2, :2].T + Tv[:2, 2]
    n = len(a)
    A = np.zeros((2 * n, 9))
    A[0::2, 0:2], A[0::2, 2] = a, 1
    A[0::2, 6:8], A[0::2, 8] = -b[:, :1] * a, -b[:, 0]
    A[1::2, 3:5], A[1::2, 5] = a, 1
    A[1::2, 6:8], A[1::2, 8] = -b[:, 1:] * a, -b[:, 1]
    A *= np.repeat(np.sqrt(np.maximum(w, 0)), 2)[:, None]
    _, _, vt = np.linalg.svd(A, full_matrices=False)
    H = np.linalg.inv(Tv) @ vt[-1].reshape(3, 3) @ Tt
    return H / H[2, 2] if abs(H[2, 2]) > 1e-12 and np.isfinite(H).all() else None


def irls_fit(tp: np.ndarray, vp: np.ndarray, H0: np.ndarray, scale: float, iterations: int = 8
             ) -> Tuple[np.ndarray, np.ndarray]:
    """Refit from a robust start with Cauchy weights of scale ``scale`` (visible px).

    Why: MAGSAC with a threshold below the frames' own biases keeps the frames that agree with
    one hypothesis and drops the others, which picks a few frames instead of averaging them.
    A soft, wider weight lets every frame contribute, so frame biases average out.
    Returns (H, weights)."""
    H = H0
    w = np.ones(len(tp))
    for _ in range(iterations):
        r = np.linalg.norm(project(H, tp) - vp, axis=1)
        w = 1.0 / (1.0 + (r / scale) ** 2)
        H_new = weighted_dlt(tp, vp, w)
        if H_new is None:
            break
        H = H_new
    return H, w


def least_squares(tp: np.ndarray, vp: np.ndarray) -> Optional[np.ndarray]:
    if len(tp) < 4:
        return None
    H, _ = cv2.findHomography(tp.astype(np.float64), vp.astype(np.float64), 0)
    return None if H is None or not np.isfinite(H).all() else H / H[2, 2]


def corner_distance(H1: np.ndarray, H2: np.ndarray, size: Size) -> float:
    """Mean distance of the thermal corners' images under two homographies, in thermal px."""
    c = thermal_corners(*size)
    return float(np.linalg.norm(project(H1, c) - project(H2, c), axis=1).mean() / homography_scale(H1, *size))


# -- dense refinement (CFOG-like descriptor, template search) --------------------------------
def orientation_descriptor(gray: np.ndarray, bins: int = 8, sigma: float = 2.0) -> np.ndarray:
    """HxWxbins: energy of the gradient along each of ``bins`` unsigned orientations, smoothed
    and normalised across orientations. Unsigned, because thermal and visible contrast may be
    inverted; normalised, because the two modalities' gradient magnitudes differ."""
    g = cv2.GaussianBlur(np.asarray(gray, np.float32), (0, 0), 1.0)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    chans = []
    for k in range(bins):
        a = math.pi * k / bins
        chans.append(cv2.GaussianBlur(np.abs(gx * math.cos(a) + gy * math.sin(a)), (0, 0), sigma))
    d = np.stack(chans, axis=-1)
    norm = np.sqrt((d * d).sum(axis=-1, keepdims=True)) + 1e-3 * float(d.max() + 1e-6)
    return (d / norm).astype(np.float32), np.sqrt(gx * gx + gy * gy)


def dense_correspondences(H: np.ndarray, thermal: np.ndarray, visible: np.ndarray, step: int = 16,
                          radius: int = 12, search: int = 6, min_texture: float = 0.5
                          ) -> Tuple[np.ndarray, np.ndarray]:
    """Thermal points and their visible positions found by template search around ``H``.

    Everything is in thermal px (the grid the errors are stated in): the visible image is
    warped into the thermal frame by H (smoothed first when it is finer than the thermal one),
    and at grid points where both images have texture (window gradient at least
    ``min_texture`` x the image's mean: relative, so dark or low-contrast cameras are not
    shut out), the thermal descriptor window is searched in the warped visible descriptor
    within +-``search`` px (sum of squared differences, sub-pixel by a parabola). A thermal
    point x found at x + d maps to H(x + d) in the visible image.
    """
    th_h, th_w = thermal.shape[:2]
    stretch = homography_scale(H, th_w, th_h)
    vis = np.asarray(visible, np.float32)
    if stretch > 1.25:  # anti-alias before sampling the visible image on the coarser thermal grid
        vis = cv2.GaussianBlur(vis, (0, 0), 0.5 * stretch)
    warped = cv2.warpPerspective(vis, H, (th_w, th_h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    valid = cv2.warpPerspective(np.full(visible.shape[:2], 255, np.uint8), H, (th_w, th_h),
                                flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    dt, gt = orientation_descriptor(thermal)
    dv, gv = orientation_descriptor(warped)
    inside = valid > 0
    mean_gt = float(gt[inside].mean()) if inside.any() else 0.0
    mean_gv = float(gv[inside].mean()) if inside.any() else 0.0
    r, s = int(radius), int(search)
    tps, found = [], []
    for y in range(r + s, th_h - r - s, step):
        for x in range(r + s, th_w - r - s, step):
            if valid[y - r - s:y + r + s + 1, x - r - s:x + r + s + 1].min() == 0:
                continue
            if gv[y - r:y + r + 1, x - r:x + r + 1].mean() < min_texture * mean_gv or \
                    gt[y - r:y + r + 1, x - r:x + r + 1].mean() < min_texture * mean_gt:
                continue
            tmpl = dt[y - r:y + r + 1, x - r:x + r + 1]
            win = dv[y - r - s:y + r + s + 1, x - r - s:x + r + s + 1]
            ssd = np.zeros((2 * s + 1, 2 * s + 1), np.float32)
            for c in range(tmpl.shape[2]):
                ssd += cv2.matchTemplate(np.ascontiguousarray(win[..., c]), np.ascontiguousarray(tmpl[..., c]),
                                         cv2.TM_SQDIFF)
            iy, ix = np.unravel_index(int(np.argmin(ssd)), ssd.shape)
            if not (0 < iy < 2 * s and 0 < ix < 2 * s):
                continue  # best shift on the search border: not found
            best = ssd[iy, ix]
            around = ssd.copy()
            around[max(0, iy - 2):iy + 3, max(0, ix - 2):ix + 3] = np.inf
            if np.isfinite(around).any() and best > 0.8 * float(around.min()):
                continue  # ambiguous: another shift is nearly as good
            dx = _parabola(ssd[iy, ix - 1], best, ssd[iy, ix + 1])
            dy = _parabola(ssd[iy - 1, ix], best, ssd[iy + 1, ix])
            tps.append((x, y))
            found.append((x + ix - s + dx, y + iy - s + dy))
    if not tps:
        return np.zeros((0, 2)), np.zeros((0, 2))
    return np.array(tps, np.float64), project(H, np.array(found, np.float64))


def _parabola(a: float, b: float, c: float) -> float:
    den = a - 2 * b + c
    return float(np.clip(0.5 * (a - c) / den, -0.5, 0.5)) if den > 1e-12 else 0.0


# -- the calibration ------------------------------------------------------------------------
@dataclass
class Calibration:
    """A rig's thermal -> visible homography and what stands behind it."""

    homography: np.ndarray
    thermal_size: Size
    visible_size: Size
    frames_used: int = 0
    inliers_used: int = 0
    corner_uncertainty_px: Dict[str, Any] = field(default_factory=dict)
    frame_stamps_ns: List[int] = field(default_factory=list)
    model: str = ""
    source: Dict[str, Any] = field(default_factory=dict)
    method: Dict[str, Any] = field(default_factory=dict)
    created: str = ""
    certain: bool = True  # False: the evidence cannot vouch for this homography (see uncertain_because)
    uncertain_because: str = ""

    def to_dict(self) -> Dict[str, Any]:
        stamps = self.frame_stamps_ns
        return {
            "homography": [[float(v) for v in row] for row in np.asarray(self.homography, np.float64)],
            "convention": "thermal pixel -> visible pixel, x_v ~ H x_t (OpenCV: x right, y down, centres at integers)",
            "thermal_size": [int(v) for v in self.thermal_size],
            "visible_size": [int(v) for v in self.visible_size],
            "certain": bool(self.certain),
            "uncertain_because": self.uncertain_because or None,
            "corner_uncertainty_px": self.corner_uncertainty_px,
            "frames_used": int(self.frames_used), "inliers_used": int(self.inliers_used),
            "time_range_ns": [int(min(stamps)), int(max(stamps))] if stamps else None,
            "frame_stamps_ns": [int(s) for s in stamps],
            "model": self.model, "source": self.source, "method": self.method,
            "created": self.created or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }


@dataclass
class FitOptions:
    """How the pooled fit is made. Distances are thermal px (scaled to visible px by the
    visible/thermal stretch where a fit needs them), so they mean the same on every camera."""

    per_frame_cap: int = 150  # most points one frame contributes
    ransac_threshold: float = 3.0  # pooled MAGSAC threshold [thermal px]
    refine: bool = True  # dense CFOG-like refinement (needs the frames' images)
    refine_iterations: int = 4  # at most; stops when an iteration moves the corners < 0.25 px
    refine_threshold: float = 1.5  # MAGSAC threshold of the refined correspondences [thermal px]
    refine_frames: int = 20  # frames the refinement searches (most inliers first)
    refine_step: int = 12  # grid step of the dense search [thermal px]
    bootstrap: int = 50  # bootstrap resamples over frames (0: no uncertainty)
    certain_below_px: float = 1.0  # certain only when the mean corner uncertainty is below this
    min_certain_frames: int = 4  # and at least this many frames agree
    seed: int = 0

    def validated(self) -> "FitOptions":
        if self.per_frame_cap < 4 or self.ransac_threshold <= 0 or self.refine_threshold <= 0:
            raise ValueError("per_frame_cap must be >= 4 and thresholds > 0")
        if self.bootstrap < 0 or self.refine_iterations < 0 or self.refine_frames < 1:
            raise ValueError("bootstrap and refine_iterations must be >= 0, refine_frames >= 1")
        return self


def fit_pooled(frames: Sequence[FrameEvidence], thermal_size: Size, visible_size: Size,
               options: Optional[FitOptions] = None) -> Calibration:
    """The calibration of a rig from frames of verified evidence (see the module docstring).

    The result says whether it is ``certain``: the dense refinement ran and settled, a second
    start of it came back to the same homography, at least ``min_certain_frames`` frames carry
    the fit, and the corner uncertainty (:func:`combined_uncertainty`) is at most
    ``certain_below_px``. Otherwise ``uncertain_because`` says what is missing."""
    from .verification import stretch_factor

    opt = (options or FitOptions()).validated()
    frames = [f for f in frames if len(f.thermal_points) >= 4]
    if not frames:
        raise CalibrationError("no frame with a verified homography to calibrate from")
    st = stretch_factor(thermal_size, visible_size)
    tp, vp, idx = balanced_points(frames, opt.per_frame_cap, opt.seed)
    H, mask = robust_fit(tp, vp, opt.ransac_threshold * st)
    if H is None or mask.sum() < 8:
        raise CalibrationError(f"no consistent homography across {len(frames)} frames ({len(tp)} points)")
    method: Dict[str, Any] = {"pooled": "USAC_MAGSAC", "per_frame_cap": opt.per_frame_cap,
                              "ransac_threshold_thermal_px": opt.ransac_threshold, "refine": "none"}
    # Soft refit over every frame's points (see irls_fit), keeping those that carry weight.
    H, w = irls_fit(tp, vp, H, 2.0 * opt.ransac_threshold * st)
    keep = w > 0.2
    method["irls_scale_thermal_px"] = 2.0 * opt.ransac_threshold
    H_pool = H / H[2, 2]
    H_final, fit_t, fit_v, fit_idx = H_pool, tp[keep], vp[keep], idx[keep]
    n_frames = len(frames)
    bias: Dict[str, float] = {}
    why, settled = "", None
    can_refine = all(f.thermal is not None and f.visible is not None for f in frames)
    if opt.refine and can_refine:
        # The pooled fit's residuals say how far the dense search must reach.
        resid = np.linalg.norm(project(H_pool, fit_t) - fit_v, axis=1) / st
        search = int(np.clip(np.ceil(2.0 * np.median(resid)), 8, 24))
        order = sorted(range(n_frames), key=lambda k: -len(frames[k].thermal_points))[:opt.refine_frames]
        sub = [frames[k] for k in order]
        ref = refine_dense(H_pool, sub, opt, search)
        method.update(refine="dense orientation-descriptor template search (CFOG-like), thermal frame",
                      refine_threshold_thermal_px=opt.refine_threshold, refine_search_thermal_px=search,
                      refine_frames=len(sub), refine_iterations_run=ref["iterations"],
                      refine_last_change_px=_r(ref["last_change"]))
        if ref["H"] is None:
            why = f"the dense refinement found too little ({ref['why']}); the matcher's shared bias is unchecked"
        else:
            moved = corner_distance(H_pool, ref["H"], thermal_size)
            method["refine_change_px"] = _r(moved)
            method["refined_points"] = int(len(ref["tp"]))
            # A second start, its answer moved by half the search range: a refinement that found
            # the rig comes back to the same homography; one that locked onto a local optimum
            # (or wanders with its own noise) does not.
            a = 0.5 * search / math.sqrt(2.0)
            again = refine_dense(ref["H"] @ np.array([[1, 0, a], [0, 1, -a], [0, 0, 1.0]]), sub, opt, search)
            if again["H"] is None:
                why = "the dense refinement did not come back from a second start"
                bias["restart"] = moved
            else:
                bias["restart"] = corner_distance(ref["H"], again["H"], thermal_size)
            settled = ref["last_change"]
            H_final, fit_t, fit_v = ref["H"], ref["tp"], ref["tv"]
            fit_idx = np.asarray([order[k] for k in ref["idx"]])
    elif opt.refine:
        why = "no images kept for the dense refinement; the matcher's shared bias is unchecked"
    else:
        why = "dense refinement off: nothing independent of the matcher checks its shared bias"
    cal = Calibration(homography=H_final / H_final[2, 2], thermal_size=tuple(thermal_size),
                      visible_size=tuple(visible_size), frames_used=n_frames, inliers_used=int(len(fit_t)),
                      frame_stamps_ns=[f.stamp_ns for f in frames], method=method)
    unc = combined_uncertainty(cal.homography, fit_t, fit_v, fit_idx, n_frames, thermal_size, opt, bias)
    if settled is not None and settled > max(0.25, unc.get("sampling") or 0.0):
        # Still moving by more than its own noise: the matcher's fit and the dense one disagree
        # by an amount nothing has explained, so it counts.
        why = why or f"the dense refinement did not settle ({settled:.2f} px in its last step)"
        bias["pooled_vs_refined"] = corner_distance(H_pool, cal.homography, thermal_size)
        unc = combined_uncertainty(cal.homography, fit_t, fit_v, fit_idx, n_frames, thermal_size, opt, bias)
    cal.corner_uncertainty_px = unc
    n_used = len(np.unique(fit_idx)) if len(fit_idx) else 0
    if not why and n_used < opt.min_certain_frames:
        why = f"only {n_used} frames carry the fit (< {opt.min_certain_frames})"
    if not why and (unc["mean"] is None or unc["mean"] > opt.certain_below_px):
        why = (f"corner uncertainty {unc['mean']} px > {opt.certain_below_px} px" if unc["mean"] is not None
               else "no uncertainty could be estimated")
    cal.certain, cal.uncertain_because = not why, why
    return cal


def dense_half_resolution(H: np.ndarray, thermal: np.ndarray, visible: np.ndarray, search: int, step: int = 8
                          ) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`dense_correspondences` on both images at half resolution: a search of
    +-``search`` full-resolution px for a quarter of the work, with windows that see twice as
    much (the first, wide step of the refinement). Returns full-resolution points."""
    C = np.diag([0.5, 0.5, 1.0])  # full px -> half px, as pyrDown samples (its pixel i is 2i)
    Ci = np.linalg.inv(C)
    t2, v2 = cv2.pyrDown(np.asarray(thermal)), cv2.pyrDown(np.asarray(visible))
    a, b = dense_correspondences(C @ H @ Ci, t2, v2, step=step, radius=8, search=int(math.ceil(search / 2)))
    if not len(a):
        return a, b
    return project(Ci, a), project(Ci, b)


def refine_dense(H0: np.ndarray, frames: Sequence[FrameEvidence], opt: FitOptions, search: int) -> Dict[str, Any]:
    """Iterate dense search + pooled fit from ``H0``: the first step searches +-``search``
    thermal px, later ones +-4 (the error is small by then). Returns H (None when too little
    was found), the points, their frame indices, iterations, last change and convergence."""
    from .verification import stretch_factor

    out: Dict[str, Any] = {"H": None, "tp": None, "tv": None, "idx": None, "iterations": 0,
                           "last_change": float("inf"), "converged": False, "why": ""}
    H = H0
    size = (frames[0].thermal.shape[1], frames[0].thermal.shape[0])
    st = stretch_factor(size, (frames[0].visible.shape[1], frames[0].visible.shape[0]))
    for it in range(opt.refine_iterations):
        rt, rv, ri = [], [], []
        for k, f in enumerate(frames):
            if it == 0 and search > 6:
                a, b = dense_half_resolution(H, f.thermal, f.visible, search, step=max(4, opt.refine_step // 2))
            else:
                a, b = dense_correspondences(H, f.thermal, f.visible, step=opt.refine_step,
                                             search=search if it == 0 else 4)
            rt.append(a)
            rv.append(b)
            ri.append(np.full(len(a), k))
        rt, rv, ri = np.concatenate(rt), np.concatenate(rv), np.concatenate(ri)
        H_ref, m = robust_fit(rt, rv, opt.refine_threshold * st)
        if H_ref is None or m.sum() < 20:
            out["why"] = f"{int(m.sum())} consistent of {len(rt)} correspondences"
            break
        change = corner_distance(H, H_ref, size)
        H = H_ref
        out.update(H=H, tp=rt[m], tv=rv[m], idx=ri[m], iterations=it + 1, last_change=change)
        if change < 0.25:
            break
    return out


def combined_uncertainty(H: np.ndarray, tp: np.ndarray, vp: np.ndarray, idx: np.ndarray, n_frames: int,
                         size: Size, opt: FitOptions, bias: Dict[str, float]) -> Dict[str, Any]:
    """Corner uncertainty (thermal px) that includes what all frames share, not only the
    scatter between them.

    Sampling error, per corner the largest of three estimates that resample different units:
    ``bootstrap`` (frames drawn with replacement), ``halves`` (half the distance between fits
    on the even and the odd frames) and ``regions`` (a delete-a-region jackknife over the
    image, :func:`region_jackknife`). Added to it in quadrature, the checks of a bias that every
    frame would share (``bias``): ``restart`` (how far the dense refinement from a second start
    ends from the first) and, when the refinement did not settle, ``pooled_vs_refined`` (the
    matcher's pooled fit against the dense one: two methods that do not share a bias).
    ``mean`` / ``max`` over the corners are the figures reported; ``sampling`` is the mean of
    the sampling part alone."""
    boot = bootstrap_uncertainty(H, tp, vp, idx, n_frames, size, opt.bootstrap, opt.seed)
    if boot.get("per_corner") is None:
        return {**boot, "components": {}}
    sampling = np.asarray(boot["per_corner"], np.float64)
    comps: Dict[str, Any] = {"bootstrap": boot["mean"]}
    c = thermal_corners(*size)
    scale = homography_scale(H, *size)
    present = np.unique(idx)
    if len(present) >= 4:
        even = np.isin(idx, present[0::2])
        Ha, Hb = least_squares(tp[even], vp[even]), least_squares(tp[~even], vp[~even])
        if Ha is not None and Hb is not None:
            half = np.linalg.norm(project(Ha, c) - project(Hb, c), axis=1) / scale / 2.0
            sampling = np.maximum(sampling, half)
            comps["halves"] = _r(float(half.mean()))
    region = region_jackknife(tp, vp, size)
    if region is not None:
        sampling = np.maximum(sampling, region)
        comps["regions"] = _r(float(region.mean()))
    total = sampling ** 2
    for key, value in bias.items():
        total = total + float(value) ** 2
        comps[key] = _r(float(value))
    rms = np.sqrt(total)
    return {"method": "largest sampling estimate (bootstrap, halves, regions) and the bias checks (restart, "
                      "pooled vs refined) in quadrature, thermal px per corner",
            "per_corner": [_r(float(v)) for v in rms], "mean": _r(float(rms.mean())), "max": _r(float(rms.max())),
            "sampling": _r(float(sampling.mean())), "components": comps}


def region_jackknife(tp: np.ndarray, vp: np.ndarray, size: Size, grid: int = 3) -> Optional[np.ndarray]:
    """Per-corner standard error (thermal px) of a delete-a-region jackknife: the fit is repeated
    without the points of each of ``grid`` x ``grid`` image regions in turn.

    Why: frames of one rig tend to show texture in the same places (a sky or a road without
    any), so every frame leaves the same region empty, the corners there are extrapolated, and
    the frames agree on the extrapolation: a bootstrap over frames cannot see this. Regions as
    the sampling unit can."""
    w, h = size
    cell = (np.clip((tp[:, 0] / w * grid).astype(int), 0, grid - 1) * grid
            + np.clip((tp[:, 1] / h * grid).astype(int), 0, grid - 1))
    cells = [k for k in np.unique(cell) if (cell == k).sum() >= 4]
    if len(cells) < 3:
        return None
    c = thermal_corners(*size)
    H = least_squares(tp, vp)
    if H is None:
        return None
    scale = homography_scale(H, *size)
    drops = []
    for k in cells:
        Hk = least_squares(tp[cell != k], vp[cell != k])
        if Hk is not None:
            drops.append(project(Hk, c))
    if len(drops) < 3:
        return None
    drops = np.stack(drops)
    n = len(drops)
    dev = drops - drops.mean(axis=0)
    return np.sqrt((n - 1) / n * np.sum(dev ** 2, axis=(0, 2))) / scale


def _r(x: float) -> Optional[float]:
    return round(float(x), 3) if x is not None and np.isfinite(x) else None


def bootstrap_uncertainty(H: np.ndarray, tp: np.ndarray, vp: np.ndarray, idx: np.ndarray, n_frames: int,
                          size: Size, resamples: int, seed: int = 0) -> Dict[str, Any]:
    """Spread (thermal px) of the corners' images over least-squares refits on frames drawn
    with replacement: per-corner RMS distance from the estimate, their mean and max."""
    present = np.unique(idx)
    if resamples <= 0 or len(present) < 2:
        return {"method": "none (fewer than 2 frames)" if len(present) < 2 else "none", "mean": None, "max": None}
    rng = np.random.default_rng(seed)
    c = thermal_corners(*size)
    ref = project(H, c)
    scale = homography_scale(H, *size)
    by_frame = [np.flatnonzero(idx == k) for k in present]
    d2 = []
    for _ in range(resamples):
        pick = np.concatenate([by_frame[k] for k in rng.integers(0, len(by_frame), len(by_frame))])
        Hb = least_squares(tp[pick], vp[pick])
        if Hb is not None:
            d2.append(np.sum((project(Hb, c) - ref) ** 2, axis=1))
    if not d2:
        return {"method": "bootstrap failed", "mean": None, "max": None}
    rms = np.sqrt(np.mean(d2, axis=0)) / scale
    return {"method": f"bootstrap over frames, {len(d2)} resamples, RMS per corner", "per_corner": [
        round(float(v), 3) for v in rms], "mean": round(float(rms.mean()), 3), "max": round(float(rms.max()), 3)}


# -- files -----------------------------------------------------------------------------------
def save_calibration(path: str, cal: Calibration) -> str:
    import yaml
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("# distillmatch rig calibration: thermal -> visible homography (distillmatch calibrate)\n")
        yaml.safe_dump(cal.to_dict(), f, sort_keys=False, default_flow_style=None)
    os.replace(tmp, path)  # a reader never sees half a file
    return path


def load_calibration(path: str) -> Calibration:
    """Read a calibration YAML; a clear CalibrationError for anything unusable."""
    import yaml
    if not os.path.isfile(path):
        raise CalibrationError(f"rig calibration file not found: {path}")
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise CalibrationError(f"rig calibration {path} is not YAML: {e}") from None
    if not isinstance(data, dict) or "homography" not in data:
        raise CalibrationError(f"rig calibration {path} has no top-level 'homography' key")
    try:
        H = np.array(data["homography"], dtype=np.float64)
    except (TypeError, ValueError):
        raise CalibrationError(f"rig calibration {path}: 'homography' must be a 3x3 list of numbers") from None
    if H.shape != (3, 3) or not np.isfinite(H).all() or abs(np.linalg.det(H)) < 1e-12:
        raise CalibrationError(f"rig calibration {path}: 'homography' must be a finite, invertible 3x3 "
                               f"list of lists (got shape {H.shape})")

    def size(key):
        v = data.get(key)
        if v is None:
            return None
        if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) and x > 0 for x in v)):
            raise CalibrationError(f"rig calibration {path}: '{key}' must be [width, height], got {v!r}")
        return (int(v[0]), int(v[1]))

    return Calibration(homography=H / H[2, 2], thermal_size=size("thermal_size"), visible_size=size("visible_size"),
                       frames_used=int(data.get("frames_used") or 0), inliers_used=int(data.get("inliers_used") or 0),
                       corner_uncertainty_px=data.get("corner_uncertainty_px") or {},
                       frame_stamps_ns=list(data.get("frame_stamps_ns") or []), model=str(data.get("model") or ""),
                       source=data.get("source") or {}, method=data.get("method") or {},
                       created=str(data.get("created") or ""), certain=bool(data.get("certain", True)),
                       uncertain_because=str(data.get("uncertain_because") or ""))
