"""The value returned by :meth:`distillmatch_ros.Matcher.match`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np


@dataclass
class MatchResult:
    """Correspondences between a visible and a thermal image, in each input image's pixels.

    Coordinates follow OpenCV: x right, y down, pixel centres at integers.
    ``homography`` maps thermal pixels to visible pixels (``x_v ~ H @ x_t``) and is None when
    it is not supported by the evidence: fewer than 4 matches, robust estimation failed, or
    verification rejected it (``verification`` says why; see :mod:`distillmatch_ros.verification`).
    ``confidence`` is the alignment confidence in [0, 1] (0 whenever ``homography`` is None).
    """

    visible_points: np.ndarray  # (N, 2) float32
    thermal_points: np.ndarray  # (N, 2) float32
    scores: np.ndarray  # (N,) float32, matching confidence in [0, 1]
    homography: Optional[np.ndarray] = None  # (3, 3) float64, thermal -> visible
    inliers: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # (N,) bool
    timings_ms: Dict[str, float] = field(default_factory=dict)  # per stage, for diagnostics
    confidence: float = 0.0  # alignment confidence in [0, 1]
    verification: str = "no matches"  # "ok", or why there is no homography
    evidence: Dict[str, float] = field(default_factory=dict)  # what verification looked at

    def __len__(self) -> int:
        return int(self.visible_points.shape[0])

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())

    @classmethod
    def empty(cls) -> "MatchResult":
        z = np.zeros((0, 2), np.float32)
        return cls(z, z.copy(), np.zeros(0, np.float32), None, np.zeros(0, bool))
