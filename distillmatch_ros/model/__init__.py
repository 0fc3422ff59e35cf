"""Pure-PyTorch DistillMatch model (no ROS imports): one module per part of the network."""
from __future__ import annotations

from typing import Any, Dict, Union

from .config import PRESETS, check_known_keys, complete_config, make_config
from .distillmatch import DistillMatch, ExportWrapper


def build_model(preset_or_config: Union[str, Dict[str, Any]] = "tiny", **overrides: Any) -> DistillMatch:
    """A new model from a preset name or a full config dict (e.g. a checkpoint's)."""
    if isinstance(preset_or_config, str):
        cfg = make_config(preset_or_config, **overrides)
    else:
        cfg = complete_config(dict(preset_or_config, **overrides))
    return DistillMatch(cfg)


def with_config(model: DistillMatch, **changes: Any) -> DistillMatch:
    """The same weights under changed config keys that hold no weights (the working size, the
    coarse band); ``model`` itself when nothing changes. A key the config does not have raises
    ValueError (it would be ignored)."""
    def same(a: Any, b: Any) -> bool:  # a size may be stored as a list or a tuple
        return list(a) == list(b) if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) else a == b
    check_known_keys(model.config, changes)
    if all(same(model.config.get(k), v) for k, v in changes.items()):
        return model
    m = DistillMatch(dict(model.config, pretrained_backbone=False, **changes))
    m.load_state_dict(model.state_dict())
    return m.eval()


def with_input_size(model: DistillMatch, size) -> DistillMatch:
    """The same weights at another working size (W, H): the network is resolution independent,
    only exported graphs are fixed to one size."""
    if size is None:
        return model
    return with_config(model, input_size=[int(size[0]), int(size[1])])


__all__ = ["with_config", "with_input_size", "DistillMatch", "ExportWrapper", "PRESETS", "build_model", "make_config"]
