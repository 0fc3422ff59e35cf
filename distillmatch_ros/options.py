"""One definition per setting: name, default, range or choices, and the line that documents it.

The owners declare their settings with :class:`Option` (``Matcher``: matcher.OPTIONS and
verification.OPTIONS; ``PipelineConfig``: its fields through :func:`setting`; the synchronizer:
sync.OPTIONS) and validate values with :meth:`Option.check`. The node's parameter table
(node_params), config/matcher.yaml and the command-line defaults are derived from them.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Optional, Tuple


@dataclass(frozen=True)
class Option:
    """A setting. ``default`` None means "decided elsewhere" (e.g. by the checkpoint); its type
    is then given by ``kind``. ``range`` is inclusive; ``ros_name`` is the node parameter's name
    when it differs (e.g. PipelineConfig.fuse is published as ``publish_fused``). ``validator``
    is a further check a range cannot say (e.g. a torch device): the reason a value is wrong, to
    follow the name (``"must be ..."``), or None."""

    name: str
    default: Any
    doc: str
    range: Optional[Tuple[float, float]] = None
    choices: Optional[Tuple[str, ...]] = None
    kind: Optional[type] = None
    ros_name: Optional[str] = None
    dynamic: bool = True  # node only: may change while the node runs
    validator: Optional[Callable[[Any], Optional[str]]] = None

    @property
    def type(self) -> type:
        return self.kind or type(self.default)

    @property
    def parameter(self) -> str:
        return self.ros_name or self.name

    def problem(self, value: Any, strict: bool = False) -> Optional[str]:
        """Why ``value`` is not acceptable (None when it is).

        ``strict`` (ROS parameters) wants the declared type exactly, except an int for a float;
        otherwise numpy scalars and whole floats for int settings are accepted too."""
        if value is None and self.default is None:
            return None
        want, name = self.type, self.name
        if not self._type_ok(value, strict):
            return f"{name} must be {want.__name__}, got {type(value).__name__}"
        if want in (int, float) and not math.isfinite(value):
            return f"{name} must be finite, got {value}"
        if self.range is not None and not self.range[0] <= value <= self.range[1]:
            return f"{name} must be in [{self.range[0]}, {self.range[1]}], got {value}"
        if self.choices is not None and value not in self.choices:
            return f"{name} must be one of {', '.join(self.choices)}, got {value!r}"
        reason = self.validator(value) if self.validator is not None else None
        return f"{name} {reason}" if reason else None

    def _type_ok(self, value: Any, strict: bool) -> bool:
        want = self.type
        if want is str:
            return isinstance(value, str)
        if want is bool:
            return type(value) is bool or (not strict and type(value).__name__ == "bool_")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if strict:  # a ROS parameter: int, or float (an int is fine where a float is wanted)
            return type(value) is int if want is int else type(value) in (int, float)
        if want is int:  # API: numpy integers and whole floats too
            return isinstance(value, numbers.Integral) or (math.isfinite(value) and float(value).is_integer())
        return True

    def check(self, value: Any, strict: bool = False) -> Any:
        """``value`` converted to the option's type; raises ValueError naming the setting."""
        problem = self.problem(value, strict)
        if problem:
            raise ValueError(problem)
        if value is None:
            return None
        return self.type(value)


def by_name(options: Iterable[Option]) -> Dict[str, Option]:
    return {o.name: o for o in options}


def defaults(options: Iterable[Option]) -> Dict[str, Any]:
    return {o.name: o.default for o in options}


def check_all(options: Dict[str, Option], values: Dict[str, Any], what: str) -> Dict[str, Any]:
    """Validate ``values`` (names must be known); returns them converted. Raises ValueError."""
    unknown = set(values) - set(options)
    if unknown:
        raise ValueError(f"unknown {what} {sorted(unknown)}; known: {sorted(options)}")
    return {k: options[k].check(v) for k, v in values.items()}


def setting(default: Any, doc: str, range: Optional[Tuple[float, float]] = None,
            choices: Optional[Tuple[str, ...]] = None, ros_name: Optional[str] = None) -> Any:
    """A dataclass field that carries its :class:`Option` (the name is filled in by
    :func:`dataclass_options`)."""
    return dataclasses.field(default=default, metadata={"option": Option("", default, doc, range, choices,
                                                                         ros_name=ros_name)})


def dataclass_options(cls: type) -> Tuple[Option, ...]:
    """The options of a dataclass whose fields were declared with :func:`setting`."""
    return tuple(dataclasses.replace(f.metadata["option"], name=f.name)
                 for f in dataclasses.fields(cls) if "option" in f.metadata)
