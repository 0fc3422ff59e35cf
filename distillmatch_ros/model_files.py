"""Finding model files: one rule for "shipped name or path", one search order, every install layout.

Why one module: the matcher (``distillmatch_tiny``) and the V2I-GAN (``v2i_gan``) are asked for
by the Python API, the ``distillmatch`` command and the node's ``model`` parameter. Each used to
have its own idea of what a path is and where models live, and a pip-installed package could not
find its V2I-GAN. Now all of them call :func:`resolve`.

**Name or path.** A value is a *path* when it contains a path separator, starts with ``~`` or
ends in ``.pt``; anything else (``distillmatch_tiny``) is the *name* of a shipped model, the file
``NAME.pt`` in the first folder below that has it:

1. each folder of ``$DISTILLMATCH_MODEL_DIR`` (``:``-separated), the user's override;
2. ``models/`` of the source checkout the package runs from (editable install, running in the repo);
3. ``share/distillmatch_ros/models`` of the prefix the package is installed in (a pip wheel into a
   venv, ``pip --user``, a colcon install space), found from this module's own location;
4. ``share/distillmatch_ros/models`` of the running interpreter's prefix (``sys.prefix``);
5. the package's share folder in the ament index (``AMENT_PREFIX_PATH``: colcon / distro installs).

A missing model raises :class:`~distillmatch_ros.errors.CheckpointError` listing every place
looked in, so an operator can see at once which layout is broken.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from .errors import CheckpointError

PACKAGE = "distillmatch_ros"
MATCHER = "distillmatch_tiny"   # the default matcher (Matcher.from_pretrained())
V2I_GAN = "v2i_gan"             # the visible -> pseudo-infrared generator (PseudoInfrared.from_pretrained())
ENV_DIR = "DISTILLMATCH_MODEL_DIR"
SUFFIX = ".pt"


def is_path(value: Union[str, os.PathLike]) -> bool:
    """True when ``value`` names a file (separator, ``~`` or ``.pt``), False for a shipped model name."""
    if isinstance(value, os.PathLike):
        return True
    text = str(value)
    seps = [os.sep] + ([os.altsep] if os.altsep else [])
    return any(s in text for s in seps) or text.startswith("~") or text.endswith(SUFFIX)


def _ament_share() -> Optional[Path]:
    """The package's share folder according to the ament index, or None when it is not indexed."""
    try:
        from ament_index_python.packages import get_package_share_directory
    except ImportError:  # no ROS Python tools: read the index the way ament_index_python does
        for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
            if (Path(prefix) / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file():
                return Path(prefix) / "share" / PACKAGE
        return None
    try:
        return Path(get_package_share_directory(PACKAGE))
    except (LookupError, ValueError, OSError):  # not indexed (a KeyError), or AMENT_PREFIX_PATH unset
        return None


def _installed_prefix_share() -> Optional[Path]:
    """``<prefix>/share/distillmatch_ros/models`` of the prefix that holds this module.

    The module lives in ``<prefix>/lib/pythonX.Y/site-packages/distillmatch_ros`` (or
    ``dist-packages``); walking up a few levels finds the prefix without assuming which.
    """
    here = Path(__file__).resolve().parent
    for ancestor in list(here.parents)[:5]:
        candidate = ancestor / "share" / PACKAGE / "models"
        if candidate.is_dir():
            return candidate
    return None


def search_locations() -> List[Tuple[Path, str]]:
    """(folder, why it is searched) in search order, without duplicates; folders may not exist."""
    found: List[Tuple[Path, str]] = []
    for d in filter(None, os.environ.get(ENV_DIR, "").split(os.pathsep)):
        found.append((Path(d).expanduser(), f"${ENV_DIR}"))
    root = Path(__file__).resolve().parent.parent
    if (root / "package.xml").is_file() and (root / "setup.py").is_file():
        found.append((root / "models", "source checkout"))
    prefix_models = _installed_prefix_share()
    if prefix_models is not None:
        found.append((prefix_models, "install prefix of the package"))
    found.append((Path(sys.prefix) / "share" / PACKAGE / "models", "Python prefix (sys.prefix)"))
    ament = _ament_share()
    if ament is not None:
        found.append((ament / "models", "ament index"))
    out, seen = [], set()
    for d, why in found:
        key = os.path.normcase(os.path.abspath(d))
        if key not in seen:
            seen.add(key)
            out.append((d, why))
    return out


def available() -> Dict[str, Path]:
    """Shipped model name -> the file :func:`resolve` would load for it."""
    names: Dict[str, Path] = {}
    for d, _ in search_locations():
        if d.is_dir():
            for f in sorted(d.glob(f"*{SUFFIX}")):
                names.setdefault(f.stem, f)
    return names


def resolve(value: Union[None, str, os.PathLike], default: str = MATCHER) -> Path:
    """The model file for a shipped name or a path (``None`` or ``""`` = ``default``).

    Raises CheckpointError when the file does not exist, listing where a name was looked for.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        value = default
    if is_path(value):
        path = Path(value).expanduser()
        if not path.is_file():
            raise CheckpointError(f"model file not found: {path}")
        return path
    name = str(value).strip()
    tried = []
    for d, why in search_locations():
        p = d / f"{name}{SUFFIX}"
        if p.is_file():
            return p
        tried.append(f"{p} ({why}{'' if d.is_dir() else ', no such folder'})")
    have = sorted(available())
    raise CheckpointError(
        f"shipped model {name!r} not found; looked in: " + "; ".join(tried)
        + (f". Models found there: {', '.join(have)}" if have else ". No model files found in any of them")
        + f". Pass a file path, or set ${ENV_DIR} to a folder holding {name}{SUFFIX}.")


def describe() -> str:
    """Human-readable search order and what each folder holds (``distillmatch models``)."""
    lines = []
    for d, why in search_locations():
        files = sorted(f.stem for f in d.glob(f"*{SUFFIX}")) if d.is_dir() else []
        state = ", ".join(files) if files else ("(empty)" if d.is_dir() else "(no such folder)")
        lines.append(f"{d}  [{why}]: {state}")
    return "\n".join(lines)
