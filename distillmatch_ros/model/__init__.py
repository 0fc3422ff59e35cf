"""Pure-PyTorch DistillMatch model (no ROS imports): one module per part of the network."""
from __future__ import annotations

from typing import Any, Dict, Union

from .config import PRESETS, complete_config, make_config
from .distillmatch import DistillMatch, ExportWrapper


def build_model(preset_or_config: Union[str, Dict[str, Any]] = "tiny", **overrides: Any) -> DistillMatch:
    """A new model from a preset name or a full config dict (e.g. a checkpoint's)."""
    if isinstance(preset_or_config, str):
        cfg = make_config(preset_or_config, **overrides)
    else:
        cfg = complete_config(dict(preset_or_config, **overrides))
    return DistillMatch(cfg)


__all__ = ["DistillMatch", "ExportWrapper", "PRESETS", "build_model", "make_config"]
