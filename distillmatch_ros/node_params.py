"""The matcher node's parameters, as data (no rclpy), so the node, config/matcher.yaml, the
launch file and the tests all check against one table.

``dynamic`` parameters may change while the node runs (through its parameter callback); the
others are read once at start-up and declared read-only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from .pipeline import FUSION_MODES

TRANSPORTS = ("raw", "compressed")  # image_transport plugin names the node understands


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    dynamic: bool = False
    range: Optional[Tuple[float, float]] = None  # inclusive, for int and float parameters
    choices: Optional[Tuple[str, ...]] = None  # for string parameters


PARAMS: Tuple[ParamSpec, ...] = (
    # -- model (read at start-up) -----------------------------------------------------
    ParamSpec("model", "", "Checkpoint file (.pt) or shipped model name; empty = the shipped default model"),
    ParamSpec("backend", "auto", "Inference backend", choices=("auto", "torch", "onnxruntime", "tensorrt")),
    ParamSpec("device", "", "Torch device (e.g. cuda:0); empty = the backend's choice"),
    ParamSpec("num_threads", 0, "CPU threads for inference; 0 = library default", range=(0, 256)),
    # -- input ------------------------------------------------------------------------
    ParamSpec("visible_transport", "raw", "raw: sensor_msgs/Image on visible/image_raw; compressed: "
              "sensor_msgs/CompressedImage (JPEG/PNG) on <visible/image_raw>/compressed",
              choices=TRANSPORTS),
    ParamSpec("thermal_transport", "raw", "raw: sensor_msgs/Image on thermal/image_raw; compressed: "
              "sensor_msgs/CompressedImage (PNG keeps 16 bits) on <thermal/image_raw>/compressed",
              choices=TRANSPORTS),
    ParamSpec("use_camera_info", False, "Subscribe to visible/camera_info and republish it with each "
              "fused image on fused/camera_info"),
    ParamSpec("queue_size", 10, "Approximate-time sync: messages kept per camera", dynamic=True, range=(1, 100)),
    ParamSpec("slop", 0.025, "Approximate-time sync: largest stamp difference in a pair [s]", dynamic=True,
              range=(0.0, 1.0)),
    ParamSpec("sync_warn_after", 3.0, "Warn when both cameras publish but no pair forms for this long [s]",
              dynamic=True, range=(0.1, 3600.0)),
    # -- matcher ----------------------------------------------------------------------
    ParamSpec("match_threshold", 0.1, "Match confidence threshold (the shipped model was tuned at 0.1)",
              dynamic=True, range=(0.0, 1.0)),
    ParamSpec("ransac_threshold", 3.0, "Homography inlier threshold [visible px]", dynamic=True,
              range=(0.1, 100.0)),
    ParamSpec("thermal_low_pct", 1.0, "Thermal normalisation: low percentile", dynamic=True, range=(0.0, 50.0)),
    ParamSpec("thermal_high_pct", 99.0, "Thermal normalisation: high percentile", dynamic=True,
              range=(50.0, 100.0)),
    ParamSpec("thermal_clahe", False, "Thermal normalisation: apply CLAHE", dynamic=True),
    ParamSpec("thermal_min_span", 0.0, "Thermal normalisation: narrowest raw range stretched to 8 bits "
              "(0 = 64 counts for 16-bit, 0.5 for float), so flat-field frames stay flat", dynamic=True,
              range=(0.0, 1e6)),
    # -- verification (Matcher options; calibrated by benchmarks/verification_operating_point.py) --
    ParamSpec("verify", True, "Verify each homography (inliers, spread, geometry); false = accept MAGSAC's",
              dynamic=True),
    ParamSpec("min_structure", 0.05, "Fewest image cells with contrast (fraction) before the network runs",
              dynamic=True, range=(0.0, 1.0)),
    ParamSpec("structure_min_std", 3.0, "A cell has contrast when its grey-level std reaches this", dynamic=True,
              range=(0.0, 128.0)),
    ParamSpec("verify_min_inliers", 30, "Verification: fewest inliers", dynamic=True, range=(4, 100000)),
    ParamSpec("verify_min_inlier_ratio", 0.10, "Verification: fewest inliers per match", dynamic=True,
              range=(0.0, 1.0)),
    ParamSpec("verify_min_spread", 0.05, "Verification: smallest inlier convex hull (fraction of the thermal "
              "image)", dynamic=True, range=(0.0, 1.0)),
    ParamSpec("verify_min_score", 0.0, "Verification: lowest median inlier score", dynamic=True, range=(0.0, 1.0)),
    ParamSpec("verify_scale_range", 2.0, "Verification: scale within [1/r, r] of the nominal stretch",
              dynamic=True, range=(1.0, 100.0)),
    ParamSpec("verify_max_rotation_deg", 30.0, "Verification: largest rotation [deg]", dynamic=True,
              range=(0.0, 180.0)),
    ParamSpec("verify_max_anisotropy", 1.6, "Verification: largest anisotropy (singular value ratio)",
              dynamic=True, range=(1.0, 100.0)),
    ParamSpec("verify_min_overlap", 0.2, "Verification: smallest fraction of the mapped thermal image inside "
              "the visible one", dynamic=True, range=(0.0, 1.0)),
    # -- alignment (pipeline) ---------------------------------------------------------
    ParamSpec("rig_mode", True, "Hold one homography (calibration or pooled evidence), re-match at match_rate_hz",
              dynamic=True),
    ParamSpec("match_rate_hz", 2.0, "Re-match rate in rig mode; 0 = every pair", dynamic=True,
              range=(0.0, 1000.0)),
    ParamSpec("min_inliers", 12, "Fewest inliers for a trusted homography", dynamic=True, range=(4, 100000)),
    ParamSpec("drift_threshold_px", 8.0, "Rig mode: a match is explained by the held homography within "
              "this error [px]", dynamic=True, range=(0.1, 10000.0)),
    ParamSpec("drift_min_explained", 0.5, "Rig mode: drift when fewer inliers than this fraction are "
              "explained", dynamic=True, range=(0.0, 1.0)),
    ParamSpec("drift_confirmations", 2, "Rig mode: consecutive drift detections before re-estimating",
              dynamic=True, range=(1, 100)),
    ParamSpec("homography_smoothing", 0.3, "Unused: rig mode now fits pooled evidence (kept so old "
              "parameter files load)", dynamic=True, range=(0.0, 1.0)),
    ParamSpec("rig_pool_frames", 30, "Rig mode without a calibration: distinct verified frames pooled into "
              "the held homography", dynamic=True, range=(1, 1000)),
    ParamSpec("background_matching", True, "Rig mode: re-match in a helper thread so every pair is fused "
              "at camera rate with the held homography", dynamic=True),
    ParamSpec("rig_calibration_file", "", "Rig calibration YAML (distillmatch calibrate or ~/calibrate): "
              "fuse every pair with it and report drift against it; empty = pool evidence"),
    ParamSpec("calibration_frames", 20, "~/calibrate: verified pairs to pool", dynamic=True, range=(2, 1000)),
    ParamSpec("calibration_output", "", "~/calibrate: file to write; empty = rig_calibration_file, or "
              "rig_calibration.yaml in the working directory", dynamic=True),
    ParamSpec("calibration_refine", True, "~/calibrate: dense refinement (about a second a frame, in a "
              "helper thread)", dynamic=True),
    # -- outputs ----------------------------------------------------------------------
    ParamSpec("publish_fused", True, "Publish fused/image", dynamic=True),
    ParamSpec("fusion_mode", "alpha", "Fusion: alpha (colour-mapped blend) or structure "
              "(visible detail over thermal base)", dynamic=True, choices=FUSION_MODES),
    ParamSpec("fusion_alpha", 0.5, "Fusion: thermal weight", dynamic=True, range=(0.0, 1.0)),
    ParamSpec("publish_matches_image", False, "Publish matches/image (a visualisation) on matched pairs",
              dynamic=True),
    ParamSpec("diagnostics_period", 1.0, "Period of /diagnostics [s]", range=(0.05, 60.0)),
)

# Replaced by the standard qos_overrides.<topic>.subscription.<policy> parameters (rclpy's
# QoSOverridingOptions); still honoured, with a deprecation warning, until release 0.3.
DEPRECATED: Tuple[ParamSpec, ...] = (
    ParamSpec("qos_reliability", "", "DEPRECATED, removed in 0.3: use "
              "qos_overrides.<topic>.subscription.reliability; empty = not set",
              choices=("", "best_effort", "reliable")),
    ParamSpec("qos_depth", 0, "DEPRECATED, removed in 0.3: use qos_overrides.<topic>.subscription.depth; "
              "0 = not set", range=(0, 100)),
)

SPECS: Dict[str, ParamSpec] = {p.name: p for p in PARAMS}
DEPRECATED_SPECS: Dict[str, ParamSpec] = {p.name: p for p in DEPRECATED}
DEFAULTS: Dict[str, Any] = {p.name: p.default for p in PARAMS}
MATCHER_OPTIONS = ("match_threshold", "ransac_threshold", "thermal_low_pct", "thermal_high_pct", "thermal_clahe",
                   "thermal_min_span",
                   "verify", "min_structure", "structure_min_std", "verify_min_inliers", "verify_min_inlier_ratio",
                   "verify_min_spread", "verify_min_score", "verify_scale_range", "verify_max_rotation_deg",
                   "verify_max_anisotropy", "verify_min_overlap")
PIPELINE_OPTIONS = {  # node parameter -> PipelineConfig field
    "rig_mode": "rig_mode", "match_rate_hz": "match_rate_hz", "min_inliers": "min_inliers",
    "drift_threshold_px": "drift_threshold_px", "drift_min_explained": "drift_min_explained",
    "drift_confirmations": "drift_confirmations", "homography_smoothing": "homography_smoothing",
    "rig_pool_frames": "rig_pool_frames", "background_matching": "background_matching",
    "publish_fused": "fuse", "fusion_mode": "fusion_mode", "fusion_alpha": "fusion_alpha",
    "publish_matches_image": "draw_matches",
}


def check_value(spec: ParamSpec, value: Any) -> Optional[str]:
    """Why ``value`` is not acceptable for ``spec`` (None when it is)."""
    expected = type(spec.default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not expected:
        return f"{spec.name} must be {expected.__name__}, got {type(value).__name__}"
    if spec.range is not None and not spec.range[0] <= value <= spec.range[1]:
        return f"{spec.name} must be in [{spec.range[0]}, {spec.range[1]}], got {value}"
    if spec.choices is not None and value not in spec.choices:
        return f"{spec.name} must be one of {', '.join(spec.choices)}, got {value!r}"
    return None
