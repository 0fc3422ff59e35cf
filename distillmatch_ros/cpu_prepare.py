"""Prepare ``backend="auto"`` on this CPU: build the INT8 models (ONNX Runtime's, OpenVINO's),
measure them with the FP32 backends (ONNX Runtime, OpenVINO; cpu_choice.py) and record the choice.

    python -m distillmatch_ros.cpu_prepare [--model NAME_OR_PATH] [--if-missing]

``--if-missing`` (what ``scripts/setup_env.sh`` runs, so that a second run only checks) does
nothing when every candidate is already measured for this model and machine.

Why a module of its own: it drives a whole :class:`~distillmatch_ros.matcher.Matcher`, which the
backends (and so quantize.py) sit below; keeping the command here keeps the imports one-way.
"""
from __future__ import annotations

import argparse


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Build the INT8 models of a matcher, measure them with the other CPU "
                                 "backends on this machine and record which one backend=auto uses.")
    ap.add_argument("--model", default="", help="checkpoint or shipped name; empty = the shipped default")
    ap.add_argument("--if-missing", action="store_true",
                    help="do nothing when every CPU backend is already measured for this model and machine")
    a = ap.parse_args(argv)
    from . import cpu_choice
    from .matcher import Matcher
    m = Matcher.from_pretrained(a.model or None, backend="onnxruntime")
    if a.if_missing and cpu_choice.fully_measured(m):
        print(f"backend auto is already measured for this model and machine: {cpu_choice.record_path(m)}")
    else:
        record = cpu_choice.prepare(m)
        print(f"backend auto will use {record['choice']}: {record['reason']}\n{cpu_choice.record_path(m)}")
    # The chosen kind's graphs for every pass (the rough one, match_guided's banded one) are built
    # with a matcher: now, not at a node's first start (an INT8 model takes about 20 s).
    Matcher.from_pretrained(a.model or None, backend="auto")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
