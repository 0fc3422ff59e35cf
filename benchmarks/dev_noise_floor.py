"""How far the dev-set figures move under input noise nobody could see, so that two models or
settings are compared against that spread instead of against one run.

    python -m benchmarks.dev_noise_floor --variants shipped,fine_window_4=3 --seeds 0,1,2,3 \
        --sets roadscene_homography,m3svd_homography,roadscene_deform --json runs/bench/noise_floor.json

Seed 0 matches the pairs as stored. Seed s > 0 adds Gaussian noise of ``--sigma`` gray levels
(default 0.5) to the 8-bit thermal image, the same noise for every variant (seeded by s and the
image's bytes). The matcher's guided passes iterate on their own fits, so a change that small
can send a pair down another path: on 2026-12-06 the shipped model's RoadScene homography AUC@10
spanned 0.585-0.653 over four seeds. A variant is any set of model config keys that hold no weights
(``key=value``, several joined by ``+``; a size as ``WxH``), applied to the model's weights
(``with_config``); ``shipped`` is the model as it is. A training checkpoint runs at its training
size and threshold unless told, e.g. ``--model runs/x/best.pt --variants
input_size=416x320+match_threshold=0.1`` (what ``training.export`` writes into the shipped model).
"""
from __future__ import annotations

import argparse
import zlib
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

from benchmarks.common import DATA, machine_stamp, parse_assignments, scores_on_sets, write_report
from distillmatch_ros.checkpoint import load_checkpoint
from distillmatch_ros.matcher import Matcher, resolve_model
from distillmatch_ros.model import with_config

METRICS = ("auc5", "auc10", "prec3")


def parse_variant(text: str) -> Dict[str, Any]:
    """``shipped`` -> {}; ``fine_window_4=3+fine_expectation=soft`` -> config changes
    (common.parse_assignments: YAML values, ``WxH`` as [W, H])."""
    if text == "shipped":
        return {}
    try:
        return parse_assignments(text)
    except ValueError as exc:
        raise SystemExit(f"a variant is 'shipped' or key=value[+key=value]: {exc}") from None


def perturbed(match, seed: int, sigma: float):
    """``match`` on the thermal image plus seeded noise (none for seed 0)."""
    if seed == 0:
        return match

    def run(visible: np.ndarray, thermal: np.ndarray):
        if thermal.dtype != np.uint8:
            raise SystemExit(f"the noise is defined for 8-bit thermal images, got {thermal.dtype}")
        rng = np.random.default_rng([seed, zlib.crc32(thermal.tobytes())])
        noisy = np.clip(np.rint(thermal + rng.normal(0.0, sigma, thermal.shape)), 0, 255).astype(np.uint8)
        return match(visible, noisy)
    return run


def spread(rows: list) -> Dict[str, Dict[str, float]]:
    """min / mean / max over seeds of each set's metrics (keys ``<set>/<metric>``)."""
    keys = [k for k in rows[0] if k.rsplit("/", 1)[-1] in METRICS]
    return {k: {"min": min(r[k] for r in rows), "mean": round(float(np.mean([r[k] for r in rows])), 3),
                "max": max(r[k] for r in rows)} for k in keys}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    ap.add_argument("--variants", default="shipped")
    ap.add_argument("--seeds", default="0,1,2,3")
    ap.add_argument("--sigma", type=float, default=0.5, help="noise standard deviation, gray levels")
    ap.add_argument("--sets", default="roadscene_homography,m3svd_homography,roadscene_deform")
    ap.add_argument("--limit", type=int, default=0, help="first N pairs of each set (0 = all)")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    model, card = load_checkpoint(str(resolve_model(a.model)))
    seeds = [int(s) for s in a.seeds.split(",")]
    report: Dict[str, Any] = {**machine_stamp(2), "sigma": a.sigma, "seeds": seeds, "variants": {}}
    for name in a.variants.split(","):
        try:  # with_config refuses keys the model would ignore (a typo would run it as shipped)
            variant = with_config(model, **parse_variant(name))
        except ValueError as exc:
            raise SystemExit(f"variant {name!r}: {exc}") from None
        matcher = Matcher.from_model(variant, backend=a.backend, card=card)
        rows = []
        for seed in seeds:
            row = {"seed": seed, **scores_on_sets(perturbed(matcher.match, seed, a.sigma), a.sets, a.data,
                                                  a.limit or None, label=lambda s: Path(s).name)}
            rows.append(row)
            print(name, row, flush=True)
        report["variants"][name] = {"rows": rows, "spread": spread(rows)}

    def show(rep):
        print(f"{'variant':24s} {'metric':34s} min / mean / max over seeds {seeds}")
        for name, v in rep["variants"].items():
            for key, s in v["spread"].items():
                print(f"{name:24s} {key:34s} {s['min']:.3f} / {s['mean']:.3f} / {s['max']:.3f}")
    write_report(report, a.json, show=show)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
