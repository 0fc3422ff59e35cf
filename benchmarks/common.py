"""What several benchmarks share: the checkout's paths, synthetic images, the tiny model at a
working size, and how a report is printed and written (:func:`write_report`).

Benchmarks run from the repository root as modules (``python -m benchmarks.<name>``), so the
checkout's ``distillmatch_ros`` and ``benchmarks`` import as they are, with nothing added to the import path.
"""
from __future__ import annotations

import json
import platform
import re
import time
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
# Data and peer weights live beside the checkout on the development machine, not in it.
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"


def parse_size(text: str) -> tuple:
    """``"640x512"`` -> ``(640, 512)`` (width, height)."""
    w, h = text.lower().split("x")
    return int(w), int(h)


def parse_assignments(text: str) -> dict:
    """``key=value[+key=value]`` -> dict, the variants' syntax of several benchmarks. Values are
    read as YAML, as training's ``--set`` reads them; a size ``WxH`` becomes [W, H]. Raises
    ValueError on an item without ``=``."""
    out = {}
    for item in text.split("+"):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"{item!r} is not key=value")
        out[key] = list(parse_size(value)) if re.fullmatch(r"\d+x\d+", value) else yaml.safe_load(value)
    return out


def textured(h, w, seed):
    """A smooth random gray image (uint8, h x w): texture a matcher can find, from any seed."""
    import cv2
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(0, 255, (h // 8, w // 8)).astype(np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)


def sized_model(size):
    """The shipped tiny model (random weights if not shipped yet) at working size ``size``."""
    from distillmatch_ros.checkpoint import load_checkpoint
    from distillmatch_ros.model import build_model, with_input_size
    shipped = REPO / "models" / "distillmatch_tiny.pt"
    if shipped.exists():
        model, card = load_checkpoint(shipped)
        return with_input_size(model, size), card, "shipped"
    return build_model("tiny", input_size=list(size), pretrained_backbone=False).eval(), {}, "random"


def write_report(result: Any, json_path: Optional[Union[str, Path]] = None, *,
                 show: Union[bool, Callable[[Any], None]] = True,
                 default: Optional[Callable[[Any], Any]] = None) -> Any:
    """The end of a benchmark run: print its report and write it as JSON; returns ``result``.

    ``show``: True prints the whole report as JSON; a callable prints its own summary (the
    full report may be long); False prints nothing (the benchmark printed its rows as it went).
    ``json_path``: the ``--json`` option; the report is written there (folders made) when set.
    ``default``: for ``json.dumps``, for values JSON does not know (numpy scalars).
    """
    text = json.dumps(result, indent=1, default=default)
    if callable(show):
        show(result)
    elif show:
        print(text)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(text)
    return result


def scores_on_sets(match, sets: str, data: Union[str, Path] = DATA, limit: int = 40,
                   label: Callable[[str], str] = str) -> dict:
    """AUC@5/10, precision@3 and seconds per pair of ``match`` on each of the comma-separated
    npz ``sets`` (a folder, or a name under ``data``), by the evaluation protocol, keyed
    ``<label(set)>/<metric>``: the row the sweeps over checkpoints and read-outs print."""
    from distillmatch_ros.evaluation import evaluate_matcher
    row = {}
    for name in sets.split(","):
        folder = Path(name) if Path(name).is_dir() else Path(data) / name
        r = evaluate_matcher(match, str(folder), limit=limit)
        row.update({f"{label(name)}/{k}": round(r[k], 3) for k in ("auc5", "auc10", "prec3", "sec")})
    return row


def machine_stamp(threads: Optional[int] = None, *, detail: bool = False) -> dict:
    """``machine`` and ``date`` keys for a report: figures from different machines and days are
    not comparable, so a report says where and when it was made.

    Short form (timings): CPU architecture and processor, the torch thread count, the day.
    ``detail``: the full platform string and the UTC time (runs repeated whenever the model changes).
    """
    if detail:
        return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.platform()}
    return {"machine": f"{platform.machine()} {platform.processor() or ''} threads={threads}",
            "date": time.strftime("%Y-%m-%d")}


def memoize_network(matcher, folder: Optional[Union[str, Path]]):
    """Keep the network's raw outputs of ``matcher`` in ``folder`` (one npz per input pair),
    keyed by the model, the backend (an INT8 graph gives other outputs than the FP32 one) and the
    exact working-size inputs; returns ``matcher``.

    Why: the benchmarks that judge verification and calibration re-run everything after the
    network (filtering, fits, decisions) each time that logic changes; on shared CPU cores the
    network is most of the time. Only the network call is cached: what comes after runs as is.
    """
    import hashlib

    if not folder:
        return matcher
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    from distillmatch_ros.backends import model_hash
    model_key = model_hash(matcher.model)

    def cached(inner, graph):
        def call(vis, th):
            key = hashlib.sha1(model_key.encode() + inner.name.encode() + graph.encode() + str(vis.shape).encode()
                               + vis.tobytes() + th.tobytes()).hexdigest()[:20]
            path = folder / f"{key}.npz"
            if path.exists():
                with np.load(path) as z:
                    return z["pv"], z["pt"], z["scores"], z["valid"]
            pv, pt, scores, valid = inner(vis, th)
            tmp = folder / f"{key}.tmp.npz"
            np.savez(tmp, pv=pv, pt=pt, scores=scores, valid=valid)
            tmp.replace(path)
            return pv, pt, scores, valid
        call.name = inner.name  # what the matcher reports as its backend
        return call

    # every pass's graph (matcher.match's rough, unguided and banded guided passes), each its own memo
    matcher._graph("rough"), matcher._graph("guided")
    matcher._backend = cached(matcher._backend, "full")
    matcher._graphs = {key: cached(g, key) for key, g in matcher._graphs.items()}
    return matcher
