"""A stand-in matcher and synthetic camera frames for pipeline tests: no network, known geometry."""
import cv2
import numpy as np

from distillmatch_ros.errors import InputError
from distillmatch_ros.evaluation import project
from distillmatch_ros.result import MatchResult

H_TRUE = np.array([[2.0, 0.05, 30.0], [-0.03, 2.0, 20.0], [0.0, 0.0, 1.0]])


class FakeMatcher:
    """Matches generated from a known homography (self.H), with noise and outliers."""

    backend = "fake"

    def __init__(self, H=H_TRUE, n=200, outliers=0.2, seed=0):
        self.H, self.n, self.outliers, self.calls = H, n, outliers, 0
        self.rng = np.random.default_rng(seed)

    def match(self, visible, thermal):
        if thermal.shape[0] < 16:
            raise InputError("too small")
        self.calls += 1
        th, tw = thermal.shape
        pt = self.rng.uniform([0, 0], [tw, th], (self.n, 2)).astype(np.float32)
        pv = project(self.H, pt) + self.rng.normal(0, 0.5, (self.n, 2))
        bad = self.rng.random(self.n) < self.outliers
        pv[bad] = self.rng.uniform(0, 600, (bad.sum(), 2))
        H, mask = cv2.findHomography(pt, pv.astype(np.float32), cv2.RANSAC, 3.0)
        return MatchResult(pv.astype(np.float32), pt, np.ones(self.n, np.float32), H,
                           mask.ravel().astype(bool), {"match": 1.0})

    def match_guided(self, visible, thermal, prior):
        """Its matches come from the known homography, so a prior changes nothing."""
        return self.match(visible, thermal)


def frames(k, tshape=(64, 80), dtype=np.uint8, seed=0):
    """Random visible (160x200 bgr) and thermal (``tshape``, ``dtype``) images of pair ``k``."""
    rng = np.random.default_rng(seed + k)
    vis = rng.integers(0, 256, (160, 200, 3), dtype=np.uint8)
    hi = 255 if dtype == np.uint8 else 30000
    th = rng.integers(0, hi, tshape).astype(dtype)
    return vis, th


def write_pairs_folder(folder, pairs) -> str:
    """Write make-bag ``Pair``s as the ``--pairs-dir`` layout (``visible/`` and ``thermal/``,
    one PNG each per stem) that ``bag.make_bag.pairs_from_folder`` reads; returns the folder."""
    from pathlib import Path
    for sub in ("visible", "thermal"):
        (Path(folder) / sub).mkdir(parents=True, exist_ok=True)
    for p in pairs:
        cv2.imwrite(str(Path(folder) / "visible" / f"{p.name}.png"), p.visible)
        cv2.imwrite(str(Path(folder) / "thermal" / f"{p.name}.png"), p.thermal)
    return str(folder)
