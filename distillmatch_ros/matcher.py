"""The plain-Python matcher API shared by the CLI, the ROS node and the bag evaluator."""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import cv2
import numpy as np

from . import cpu_choice, model_files, preprocess, verification
from .backends import check_device, make_backend
from .checkpoint import load_checkpoint
from .errors import InputError
from .evaluation import project
from .model import with_config
from .options import Option, by_name, check_all, defaults
from .preprocess import check_visible, normalize_thermal
from .result import MatchResult

DEFAULT_MODEL = model_files.MATCHER

#: Settings changeable at run time (the node exposes each as a ROS parameter of the same name).
OPTIONS: Tuple[Option, ...] = (
    Option("match_threshold", None, "Match confidence threshold (dual softmax); unset = the checkpoint's own "
           "(0.1 for the shipped model)", range=(0.0, 1.0), kind=float),
    Option("guided_pass", True, "Match in passes: a rough pass at 0.6x the working size finds the "
           "homography, then full-size passes see the visible image resampled into the thermal frame by the last "
           "fit (match_guided); off: one full-size pass"),
    Option("guided_passes", 2, "guided_pass: at most this many full-size guided passes, each guided by the "
           "last verified fit, until one moves its prior less than guided_converged_px", range=(1, 5)),
    Option("guided_band", 5, "match_guided (a stream's held homography, a rig's calibration as prior): match each "
           "1/8 cell only within this many cells of its own position; 0: over the whole image. match's own guided "
           "passes always search the whole image. A new value builds its graph at the next such pass (seconds)",
           range=(0, 16)),
    Option("guided_converged_px", 4.0, "guided_pass: a guided fit that moves its prior's image corners by less "
           "than this (working-size px; 4 = half a 1/8 cell) has converged, no further pass", range=(0.0, 64.0)),
    *verification.FIT_OPTIONS,
    *preprocess.OPTIONS,
    *verification.OPTIONS,
)
OPTION_SPECS: Dict[str, Option] = by_name(OPTIONS)
DEFAULT_OPTIONS: Dict[str, Any] = defaults(OPTIONS)


def resolve_model(name: Optional[str] = None) -> Path:
    """Path of a shipped matcher by name (default: the tiny preset) or of an explicit file."""
    return model_files.resolve(name, model_files.MATCHER)


class Matcher:
    """Finds correspondences between a visible and a thermal image.

    ``Matcher(model_path, backend="auto", device=None, **options)`` loads any checkpoint;
    :meth:`from_pretrained` loads a shipped one. ``backend`` is ``auto`` or one of
    :data:`~distillmatch_ros.backends.BACKENDS`; ``auto`` picks TensorRT on a GPU with
    torch-tensorrt, else PyTorch on CUDA, else on a CPU the fastest of ONNX Runtime and OpenVINO
    (and their INT8 models, once built) that keeps the accuracy, measured once per model and
    machine (cpu_choice.py). The choice and why is :attr:`backend_choice`.
    """

    def __init__(self, model_path: os.PathLike | str, backend: str = "auto", device: Optional[str] = None,
                 **options: Any):
        check_device(device, backend)  # before the model loads: a bad device fails fast
        self.model_path = Path(model_path)
        model, card = load_checkpoint(self.model_path)
        self._setup(model, card, backend, device, options)

    @classmethod
    def from_model(cls, model, backend: str = "torch", device: Optional[str] = None, card=None,
                   **options: Any) -> "Matcher":
        """Wrap an in-memory model (training validation runs exactly the inference path)."""
        self = cls.__new__(cls)
        self.model_path = None
        self._setup(model, dict(card or {}), backend, device, options)
        return self

    def _setup(self, model, card, backend, device, options) -> None:
        self.model, self.model_card = model.eval(), card
        cfg = self.model.config
        self.input_size: Tuple[int, int] = (int(cfg["input_size"][0]), int(cfg["input_size"][1]))
        self.rough_size: Tuple[int, int] = rough_working_size(self.input_size)
        self.device = device
        self._graphs: Dict[str, Any] = {}  # the rough and the banded guided graphs (_graph)
        self.options = dict(DEFAULT_OPTIONS)
        self.set_options(**options)
        # The graph keeps every mutual nearest neighbour (sorted by confidence); the threshold is
        # applied afterwards so it can change at run time without re-exporting the graph.
        self.model.match_threshold = 0.0
        if backend == "auto" and cpu_choice.applies(device):
            self._backend, self.backend_choice = cpu_choice.choose(self, device)
        else:
            self._backend = make_backend(backend, self.model, device, self.input_size, prepare=self.prepare)
            self.backend_choice = f"{'auto' if backend == 'auto' else 'asked for'}: {self._backend.name}"
        if backend == "auto":
            print(f"distillmatch backend {self.backend_choice}", flush=True)
        self.backend: str = self._backend.name
        # Now, not in the first pair's latency (an OpenVINO compile takes about a second).
        if self.options["guided_pass"]:
            self._graph("rough")
        self._graph("guided")  # match_guided's (a stream's guided passes, calibration)

    @classmethod
    def from_pretrained(cls, name: Optional[str] = None, backend: str = "auto", device: Optional[str] = None,
                        **options: Any) -> "Matcher":
        """Load a shipped model by name (default ``distillmatch_tiny``) or a checkpoint path."""
        return cls(resolve_model(name), backend=backend, device=device, **options)

    def checked_options(self, **options: Any) -> Dict[str, Any]:
        """All options after applying ``options``, validated but not applied (so a caller that
        changes several owners at once can refuse the whole change). Raises ValueError."""
        merged = dict(self.options, **check_all(OPTION_SPECS, options, "matcher options"))
        if merged["match_threshold"] is None:
            merged["match_threshold"] = OPTION_SPECS["match_threshold"].check(
                float(self.model.config["match_threshold"]))
        if merged["thermal_low_pct"] >= merged["thermal_high_pct"]:
            raise ValueError(f"thermal_low_pct ({merged['thermal_low_pct']}) must be below thermal_high_pct "
                             f"({merged['thermal_high_pct']})")
        return merged

    def set_options(self, **options: Any) -> None:
        """Change options (names and values as in :data:`OPTIONS`); raises ValueError and changes
        nothing when one is unknown or out of range."""
        self.options = self.checked_options(**options)

    def prepare(self, visible: np.ndarray, thermal: np.ndarray, size: Optional[Tuple[int, int]] = None):
        """Validate, convert to gray uint8 and resize both images to the working size (or ``size``)."""
        vis, th = self._grays(visible, thermal)
        size = size or self.input_size
        return vis, th, to_tensor(vis, size), to_tensor(th, size)

    def _grays(self, visible: np.ndarray, thermal: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Both images validated, as gray uint8 (the thermal one normalised): once a pair, however
        many passes it gets."""
        vis = check_visible(visible)
        return vis, normalize_thermal(thermal, self.options["thermal_low_pct"], self.options["thermal_high_pct"],
                                      self.options["thermal_clahe"], self.options["thermal_min_span"])

    def match(self, visible: np.ndarray, thermal: np.ndarray) -> MatchResult:
        """Match one pair. visible: HxW or HxWx3 uint8 BGR; thermal: HxW uint8/uint16/float32.

        With ``guided_pass`` (the default): a rough pass at :attr:`rough_size` gives a verified
        homography, and the full-size pass is :meth:`match_guided` by it. The network then
        sees the pair nearly aligned, whatever the rotation, zoom and resolution ratio between the
        cameras. A guided fit that still moves its prior by half a 1/8 cell or more guides one
        more pass (``guided_passes``, ``guided_converged_px``). On a camera the network never
        saw (m3svd_homography) AUC@10 rose from 0.39 (one pass) to 0.56 (one guided pass) and
        0.65 (guided until converged), for about 1.4x and 2.4x the time of one pass
        (BENCHMARKS.md, issue 18). When the rough pass or the first guided one is not verified,
        an unguided full pass follows, and when that one is verified, passes guided by it; the
        last verified guided result is returned.
        """
        return self._match(visible, thermal, int(self.options["guided_passes"]))

    def match_for_stream(self, visible: np.ndarray, thermal: np.ndarray) -> MatchResult:
        """:meth:`match` with at most one guided pass: for a pair of a stream that has no
        verified prior yet (its first, or after a lost lock). The stream's next pairs are matched
        with the fit it holds as prior, one pass each, so the iteration happens across frames
        instead of inside this frame's latency (PairPipeline, ``guide_with_held``)."""
        return self._match(visible, thermal, 1)

    def _match(self, visible: np.ndarray, thermal: np.ndarray, guided_passes: int) -> MatchResult:
        t0 = time.perf_counter()
        vis, th = self._grays(visible, thermal)
        if not self.options["guided_pass"]:
            return self._match_once(vis, th, self._backend, self.input_size, t0=t0)
        rough = self._match_once(vis, th, self._graph("rough"), self.rough_size, self._rough_options(), t0=t0)
        if rough.verification.startswith("no structure"):
            return rough  # the full-size pass would refuse the same frame
        passes, result = 1, None
        # Only a verified homography guides: a prior from a rejected fit gives the guided pass,
        # on pairs of *different* street scenes with similar layouts, a second chance to line
        # them up (BENCHMARKS.md, "Verification with two passes").
        if rough.homography is not None:
            result, n = self._guide_until_converged(vis, th, rough.homography, guided_passes)
            passes += n
        if result is None or result.homography is None:
            full = self._match_once(vis, th, self._backend, self.input_size)
            passes += 1
            result = full
            if full.homography is not None:
                again, n = self._guide_until_converged(vis, th, full.homography, guided_passes)
                passes += n
                result = again if again.homography is not None else full
        result.timings_ms = dict(result.timings_ms, total=(time.perf_counter() - t0) * 1e3)
        result.evidence = dict(result.evidence, passes=float(passes))
        return result

    def _guide_until_converged(self, vis: np.ndarray, th: np.ndarray, prior: np.ndarray,
                               guided_passes: int) -> Tuple[MatchResult, int]:
        """Guided passes, each by the last verified fit, until a fit moves its prior by less than
        ``guided_converged_px`` or ``guided_passes`` have run; the last verified result, or the
        first pass's when none was verified. Why iterate: the network is most precise on a
        nearly aligned pair, and a guided fit from a rough prior that was several cells off is
        itself a few pixels off; a second pass by it gained m3svd_homography 0.07-0.09 AUC@10
        (BENCHMARKS.md, issue 18). Once a fit moves its prior by under half a 1/8 cell, the next
        pass would see the same cells and gained nothing measurable. These passes search the whole
        image: in the band (:meth:`match_guided`) they lost 0.016 AUC@10 on M3SVD, a camera the
        weights never saw, in three runs (BENCHMARKS.md, "A coarse band for guided passes").
        Returns the result and the number of passes run."""
        source = self._guide_source(vis, th)
        best = None
        for n in range(1, guided_passes + 1):
            r = self._guided(source, th, prior, band=False)
            if r.homography is None:
                return (best if best is not None else r), n  # (a MatchResult with no matches is falsy)
            best = r
            if guided_shift_px(prior, r.homography, th.shape, self.input_size) < self.options["guided_converged_px"]:
                break
            prior = r.homography
        return best, n

    def _rough_options(self) -> Dict[str, Any]:
        """Verification of the rough pass: the fewest inliers scaled by its share of the 1/8
        cells (at least 12) and the inlier threshold by its coarser grid, the other checks as
        they are. A rough pass sees a third of the cells at 1.7x their size, so a right pair
        gives it fewer, coarser inliers; the full thresholds rejected it on half the M3SVD dev
        pairs. Its homography is only a prior: the guided pass is verified in full."""
        cells = (self.rough_size[0] * self.rough_size[1]) / (self.input_size[0] * self.input_size[1])
        return dict(self.options, verify_min_inliers=max(12, round(self.options["verify_min_inliers"] * cells)),
                    ransac_threshold=self.options["ransac_threshold"] / math.sqrt(cells))

    def _graph(self, role: str):
        """The backend of the rough pass (``rough``: a graph at :attr:`rough_size`) or of the
        guided passes (``guided``: the coarse level matches within ``guided_band`` cells,
        CoarseMatching.match_in_band), of the unguided pass's kind; built when first needed.
        With ``guided_band`` 0 the guided passes run the unguided graph."""
        band = int(self.options["guided_band"])
        if role == "guided" and band == 0:
            return self._backend
        key = "rough" if role == "rough" else f"guided-band{band}"
        if key not in self._graphs:
            size = self.rough_size if role == "rough" else self.input_size
            model = self.model if role == "rough" else with_config(self.model, coarse_band=band)
            model.match_threshold = 0.0  # as the unguided graph's (_setup)
            self._graphs[key] = make_backend(self._backend.name, model, self.device, size,
                                             prepare=lambda v, t: self.prepare(v, t, size))
        return self._graphs[key]

    def _match_once(self, vis: np.ndarray, th: np.ndarray, backend, size: Tuple[int, int],
                    opt: Optional[Dict[str, Any]] = None, t0: Optional[float] = None) -> MatchResult:
        """One network pass at working size ``size`` on ``backend`` over gray images from
        :meth:`_grays`, with the structure checks, the robust fit and verification (by ``opt``,
        default the matcher's options). ``t0``: when the pair's preprocessing began."""
        t0 = time.perf_counter() if t0 is None else t0
        opt = opt or self.options
        tv, tt = to_tensor(vis, size), to_tensor(th, size)
        cell, min_std = int(opt["structure_cell"]), float(opt["structure_min_std"])
        # Structure before the network: a frame without contrast carries no evidence, and the
        # network would match its border (zero padding) to itself (verification.py).
        std_v = verification.structure_map(tv[0, 0] * 255.0, cell)
        std_t = verification.structure_map(tt[0, 0] * 255.0, cell)
        t1 = time.perf_counter()
        for name, std_map in (("visible", std_v), ("thermal", std_t)):
            frac = verification.textured_fraction(std_map, min_std)
            if frac < float(opt["min_structure"]):
                result = MatchResult.empty()
                result.verification = (f"no structure in the {name} image ({frac:.1%} of it has contrast, "
                                       f"min_structure {opt['min_structure']})")
                result.timings_ms = {"preprocess": (t1 - t0) * 1e3, "network": 0.0, "homography": 0.0,
                                     "total": (t1 - t0) * 1e3}
                return result
        pv, pt, scores, valid = backend(tv, tt)
        t2 = time.perf_counter()
        keep = valid.astype(bool) & (scores >= opt["match_threshold"]) & (scores > 0)
        if float(opt["min_structure"]) > 0:  # drop matches where either image is flat
            keep &= verification.in_textured_cells(pv, std_v, cell, min_std)
            keep &= verification.in_textured_cells(pt, std_t, cell, min_std)
        pv = scale_points(pv[keep], size, vis.shape)
        pt = scale_points(pt[keep], size, th.shape)
        result = MatchResult(pv, pt, scores[keep].astype(np.float32))
        tsize, vsize = (th.shape[1], th.shape[0]), (vis.shape[1], vis.shape[0])
        H, inliers = verification.robust_homography(pt, pv, tsize, vsize, opt)
        evidence = verification.features(H, inliers, pt, result.scores, tsize, vsize)
        result.evidence = evidence
        if H is None:
            result.homography, result.inliers = None, np.zeros(len(result), bool)
            result.verification = "no homography could be fitted" if len(result) >= 4 else "fewer than 4 matches"
        elif not opt["verify"]:
            result.homography, result.inliers = H, inliers
            result.verification = "not verified"
            result.confidence = verification.confidence(evidence, opt)
        else:
            verdict = verification.decide(evidence, opt)
            result.verification, result.confidence = verdict.reason, verdict.confidence
            result.homography = H if verdict.accepted else None
            result.inliers = inliers if verdict.accepted else np.zeros(len(result), bool)
        t3 = time.perf_counter()
        result.timings_ms = {"preprocess": (t1 - t0) * 1e3, "network": (t2 - t1) * 1e3,
                             "homography": (t3 - t2) * 1e3, "total": (t3 - t0) * 1e3}
        return result

    def match_guided(self, visible: np.ndarray, thermal: np.ndarray, prior: np.ndarray) -> MatchResult:
        """Match with a prior thermal -> visible homography (a rig's earlier calibration).

        The visible image is first resampled into the thermal frame by ``prior``, so the
        network sees a nearly aligned pair of one size whatever the rig's rotation, zoom and
        resolution ratio (the network was trained on rotations up to 15 deg and scales of
        0.75-1.3; a rig outside that, or at its edge, fails unguided). Matching and verification
        run on that pair; points are returned in each input image's own pixels and
        ``homography`` is the full thermal -> visible map. A wrong prior gives no consistent
        matches and is rejected by verification like any wrong pair. The coarse level matches
        each cell within ``guided_band`` cells of its position (:meth:`_graph`): a prior more
        than that off (40 working px by default) needs ``guided_band=0``.
        """
        prior = np.asarray(prior, np.float64)
        if prior.shape != (3, 3) or not np.all(np.isfinite(prior)) or abs(np.linalg.det(prior)) < 1e-12:
            raise InputError("the prior homography must be a finite, invertible 3x3 matrix")
        vis, th = self._grays(visible, thermal)
        return self._guided(self._guide_source(vis, th), th, prior, band=True)

    def _guide_source(self, vis: np.ndarray, th: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """The visible image the guided passes warp, and the map from its pixels' frame: a finer
        visible camera area-averaged down to about the thermal scale first (the warp itself
        samples bilinearly and would alias), with a pixel-centre-aware scale. Made once a pair,
        however many guided passes warp it."""
        th_h, th_w = th.shape[:2]
        shrink = max(1.0, verification.stretch_factor((th_w, th_h), (vis.shape[1], vis.shape[0])))
        if shrink <= 1.25:
            return vis, np.eye(3)
        small = cv2.resize(vis, (max(1, round(vis.shape[1] / shrink)), max(1, round(vis.shape[0] / shrink))),
                           interpolation=cv2.INTER_AREA)
        sx, sy = small.shape[1] / vis.shape[1], small.shape[0] / vis.shape[0]
        return small, np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])

    def _guided(self, source: Tuple[np.ndarray, np.ndarray], th: np.ndarray, prior: np.ndarray,
                band: bool) -> MatchResult:
        """:meth:`match_guided` on :meth:`_guide_source`'s visible image and the gray thermal one;
        ``band``: on the banded graph (:meth:`_graph`), else on the unguided one."""
        th_h, th_w = th.shape[:2]
        vis, to_small = source
        warped = cv2.warpPerspective(vis, to_small @ prior, (th_w, th_h),
                                     flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderValue=0)
        # A pair aligned by a prior gives right matches a larger share of the matches, and a
        # wrong prior can still line up the layout of two similar scenes: a stricter ratio.
        opt = dict(self.options, verify_min_inlier_ratio=max(self.options["verify_min_inlier_ratio"],
                                                             self.options["verify_guided_min_inlier_ratio"]))
        graph = self._graph("guided") if band else self._backend
        result = self._match_once(warped, th, graph, self.input_size, opt)
        # warped pixel x sees the visible point prior(x): map the matches and the fit back.
        result.visible_points = project(prior, result.visible_points).astype(np.float32)
        if result.homography is not None:
            H = prior @ result.homography
            result.homography = H / H[2, 2]
        result.evidence = dict(result.evidence, guided=1.0)
        return result

    def estimate_homography(self, thermal_pts: np.ndarray, visible_pts: np.ndarray,
                            thermal_size: Optional[Tuple[int, int]] = None,
                            visible_size: Optional[Tuple[int, int]] = None):
        """Robust thermal->visible homography (USAC MAGSAC) and the inlier mask; the threshold is
        ``ransac_threshold`` thermal px (equal sizes when the image sizes are not given)."""
        tsize = thermal_size or (1, 1)
        return verification.robust_homography(thermal_pts, visible_pts, tsize, visible_size or tsize, self.options)


def guided_shift_px(prior: np.ndarray, fit: np.ndarray, thermal_shape, working_size: Tuple[int, int]) -> float:
    """How far ``fit`` moves ``prior`` (both thermal -> visible): the largest displacement of the
    thermal image's corners under prior^-1 . fit, in working-size pixels (the network's grid)."""
    if not (np.all(np.isfinite(prior)) and np.all(np.isfinite(fit))):
        return float("inf")
    h, w = thermal_shape[:2]
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
    moved = project(np.linalg.inv(prior) @ fit, corners)
    d = np.abs(moved - corners) * np.array([working_size[0] / w, working_size[1] / h])
    return float(d.max()) if np.all(np.isfinite(d)) else float("inf")


def rough_working_size(size: Tuple[int, int], factor: float = 0.6) -> Tuple[int, int]:
    """The rough pass's working size: ``factor`` x the full one in multiples of 8 (416x320 ->
    248x192, about a third of the network time). Its homography guides the full pass, and the
    guided pass is the more precise the closer that prior is: 160x128 (a sixth of the time)
    gave m3svd_homography AUC@10 0.48 where this gives 0.54 (BENCHMARKS.md, issue 18)."""
    return tuple(max(32, int(round(v * factor / 8)) * 8) for v in size)  # type: ignore[return-value]


def to_tensor(gray: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """[1,1,H,W] float32 in 0..1 at working size ``size`` (W, H): area-averaged when shrinking."""
    w, h = size
    if gray.shape[1] != w or gray.shape[0] != h:
        interp = cv2.INTER_AREA if gray.shape[1] > w else cv2.INTER_LINEAR
        gray = cv2.resize(gray, (w, h), interpolation=interp)
    return (gray.astype(np.float32) * (1.0 / 255.0))[None, None]


def scale_points(pts: np.ndarray, working_wh: Tuple[int, int], image_shape) -> np.ndarray:
    """Map working-resolution pixel coordinates to an image's own pixels (centres at integers)."""
    h, w = image_shape[:2]
    sx, sy = w / working_wh[0], h / working_wh[1]
    out = np.empty((len(pts), 2), np.float32)
    out[:, 0] = (pts[:, 0] + 0.5) * sx - 0.5
    out[:, 1] = (pts[:, 1] + 0.5) * sy - 0.5
    return out


__all__ = ["Matcher", "MatchResult", "InputError", "OPTIONS", "resolve_model", "scale_points"]
