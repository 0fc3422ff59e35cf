"""The matcher node's parameters, as data (no rclpy).

Only the node's own settings (model loading, transports, diagnostics, ...) are declared here.
Every other parameter is derived from its owner's definition (:mod:`distillmatch_ros.options`):
the Matcher's options, :class:`~distillmatch_ros.pipeline.PipelineConfig`, the synchronizer and
the calibration run, under the same name (or the option's ``ros_name``). config/matcher.yaml and
the table in docs/ROS_NODE.md are generated from this module (:func:`yaml_text`,
:func:`markdown_table`); the tests check that they are up to date.

``dynamic`` parameters may change while the node runs (the node routes each change to its
owner, which validates it); the others are read once at start-up and declared read-only.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Tuple

from . import calibration, matcher, sync
from .backends import BACKENDS, DEVICE
from .options import Option
from .pipeline import PipelineConfig

TRANSPORTS = ("raw", "compressed")  # image_transport plugin names the node understands


def _node(name: str, default: Any, doc: str, dynamic: bool = False, **kw: Any) -> Option:
    return Option(name, default, doc, dynamic=dynamic, **kw)


#: Where the node's default differs from the owner's, and why.
NODE_DEFAULTS: Dict[str, Tuple[Any, str]] = {
    # A ROS double cannot be "unset" (the Matcher's "the checkpoint's own"): the shipped model's.
    "match_threshold": (0.1, "Match confidence threshold (the shipped model was tuned at 0.1)"),
    # On a robot every pair must be fused at camera rate; offline replay (bag-eval) matches in
    # line so that its figures do not depend on the machine's speed.
    "background_matching": (True, None),
}


def _owned(owner: str, options: Tuple[Option, ...]) -> Tuple[Tuple[Option, str, str], ...]:
    """(node parameter, owner, owner's option name) for each option of an owner."""
    out = []
    for o in options:
        default, doc = NODE_DEFAULTS.get(o.parameter, (o.default, None))
        param = dataclasses.replace(o, name=o.parameter, ros_name=None, default=default, doc=doc or o.doc,
                                    dynamic=True)
        out.append((param, owner, o.name))
    return tuple(out)


_MODEL = (
    _node("model", "", "Checkpoint file (.pt) or shipped model name; empty = the shipped default model"),
    _node("backend", "auto", "Inference backend", choices=("auto",) + BACKENDS),
    DEVICE,
    _node("num_threads", 0, "CPU threads for inference; 0 = library default", range=(0, 256)),
)
_INPUT = (
    _node("visible_transport", "raw", "raw: sensor_msgs/Image on visible/image_raw; compressed: "
          "sensor_msgs/CompressedImage (JPEG/PNG) on <visible/image_raw>/compressed", choices=TRANSPORTS),
    _node("thermal_transport", "raw", "raw: sensor_msgs/Image on thermal/image_raw; compressed: "
          "sensor_msgs/CompressedImage (PNG keeps 16 bits) on <thermal/image_raw>/compressed", choices=TRANSPORTS),
    _node("use_camera_info", False, "Subscribe to visible/camera_info and republish it with each fused image on "
          "fused/camera_info"),
)
_SYNC_WARN = _node("sync_warn_after", 3.0, "Warn when both cameras publish but no pair forms for this long [s]",
                   dynamic=True, range=(0.1, 3600.0))
_CALIBRATION_FILE = _node("rig_calibration_file", "", "Rig calibration YAML (distillmatch calibrate or "
                          "~/calibrate): fuse every pair with it and report drift against it; empty = pool evidence")
_CALIBRATION_OUTPUT = _node("calibration_output", "", "~/calibrate: file to write; empty = rig_calibration_file, "
                            "or rig_calibration.yaml in the working directory", dynamic=True)
_DIAGNOSTICS = _node("diagnostics_period", 1.0, "Period of /diagnostics [s]", range=(0.05, 60.0))

#: (parameter, owner, owner's name), in the order of config/matcher.yaml. Owners: "node",
#: "sync", "matcher", "pipeline", "calibration".
ROUTES: Tuple[Tuple[Option, str, str], ...] = (
    *((o, "node", o.name) for o in _MODEL + _INPUT),
    *_owned("sync", sync.OPTIONS),
    (_SYNC_WARN, "node", _SYNC_WARN.name),
    *_owned("matcher", matcher.OPTIONS),
    *_owned("pipeline", PipelineConfig.options()),
    (_CALIBRATION_FILE, "node", _CALIBRATION_FILE.name),
    *_owned("calibration", calibration.OPTIONS),
    (_CALIBRATION_OUTPUT, "node", _CALIBRATION_OUTPUT.name),
    (_DIAGNOSTICS, "node", _DIAGNOSTICS.name),
)
PARAMS: Tuple[Option, ...] = tuple(p for p, _, _ in ROUTES)
OWNER: Dict[str, Tuple[str, str]] = {p.name: (owner, name) for p, owner, name in ROUTES}

# Replaced by the standard qos_overrides.<topic>.subscription.<policy> parameters (rclpy's
# QoSOverridingOptions); still honoured, with a deprecation warning, until release 0.3.
DEPRECATED: Tuple[Option, ...] = (
    _node("qos_reliability", "", "DEPRECATED, removed in 0.3: use qos_overrides.<topic>.subscription.reliability; "
          "empty = not set", choices=("", "best_effort", "reliable")),
    _node("qos_depth", 0, "DEPRECATED, removed in 0.3: use qos_overrides.<topic>.subscription.depth; 0 = not set",
          range=(0, 100)),
)

SPECS: Dict[str, Option] = {p.name: p for p in PARAMS}
DEPRECATED_SPECS: Dict[str, Option] = {p.name: p for p in DEPRECATED}
DEFAULTS: Dict[str, Any] = {p.name: p.default for p in PARAMS}


def owned_by(owner: str, values: Dict[str, Any]) -> Dict[str, Any]:
    """The entries of ``values`` (parameter -> value) that ``owner`` takes, under its own names."""
    return {OWNER[k][1]: v for k, v in values.items() if k in OWNER and OWNER[k][0] == owner}


def _yaml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return f'"{v}"' if isinstance(v, str) else repr(v)


def _constraint(p: Option, sep: str) -> str:
    if p.range is not None:
        return f"[{p.range[0]}, {p.range[1]}]"
    return sep.join(p.choices) if p.choices else ""


_YAML_HEADER = """\
# Parameters of distillmatch_ros/matcher_node. Generated from distillmatch_ros/node_params.py
# (node_params.yaml_text()); test/test_launch_config.py checks that it is up to date.
# Use: --ros-args --params-file config/matcher.yaml ; launch/matcher.launch.py passes it by default.
# (dynamic) = can be changed while the node runs, e.g. ros2 param set /matcher_node fusion_alpha 0.7
# Input QoS is SensorDataQoS (best effort, depth 5), changed with the standard ROS 2 parameters
# qos_overrides.<fully qualified topic>.subscription.{reliability,depth,history}, for example:
#     qos_overrides:
#       /rig/visible/image_raw:
#         subscription:
#           reliability: reliable
/**:
  ros__parameters:
"""


def yaml_text() -> str:
    """config/matcher.yaml: every parameter with its default, documented."""
    lines = [_YAML_HEADER.rstrip("\n")]
    for p in PARAMS:
        note = " ".join(x for x in (p.doc, _constraint(p, "|"), "(dynamic)" if p.dynamic else "") if x)
        lines += [f"    # {note}", f"    {p.name}: {_yaml_value(p.default)}"]
    return "\n".join(lines) + "\n"


def markdown_table() -> str:
    """The parameter table of docs/ROS_NODE.md."""
    rows = ["| Parameter | Default | Range / choices | Dynamic | Meaning |", "|---|---|---|---|---|"]
    for p in PARAMS:
        default = '""' if p.default == "" else _yaml_value(p.default).strip('"')
        rows.append(f"| `{p.name}` | {default} | {_constraint(p, ', ')} | {'yes' if p.dynamic else 'no'} "
                    f"| {p.doc} |")
    return "\n".join(rows) + "\n"
