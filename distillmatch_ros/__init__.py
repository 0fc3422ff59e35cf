"""distillmatch_ros: visible/thermal image matching with a network distilled from a vision
foundation model (DistillMatch), as a plain Python API and a ROS 2 node.

Heavy submodules load on first use so ``import distillmatch_ros`` stays cheap.
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "Matcher": ("distillmatch_ros.matcher", "Matcher"),
    "MatchResult": ("distillmatch_ros.result", "MatchResult"),
    "PseudoInfrared": ("distillmatch_ros.pseudo_infrared", "PseudoInfrared"),
    "fuse": ("distillmatch_ros.fusion", "fuse"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'distillmatch_ros' has no attribute {name!r}")


__all__ = list(_LAZY) + ["__version__"]
