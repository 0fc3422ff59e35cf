"""Effect of dropping matches in flat cells (Matcher option ``min_structure``) on the protocol.

    python -m benchmarks.structure_filter_effect --json runs/verify/protocol_structure.json

Runs ``evaluation.evaluate_matcher`` with the shipped model on roadscene_homography and
m3svd_homography (../shared/data), with ``min_structure`` 0 (no structure check, no filter) and
at its default, and prints AUC@3/5/10, precision@3 and NCM for both.
"""
from __future__ import annotations

import argparse
import sys

from benchmarks.common import DATA, write_report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--backend", default="onnxruntime")
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        print(f"{DATA} is absent (see ../shared/docs/DATA.md)")
        return 2
    import torch
    torch.set_num_threads(1)
    from distillmatch_ros import evaluation, verification
    from distillmatch_ros.matcher import Matcher
    m = Matcher.from_pretrained(backend=args.backend)
    out = {}
    for s in ("roadscene_homography", "m3svd_homography"):
        for ms in (0.0, verification.DEFAULTS["min_structure"]):
            m.set_options(min_structure=ms)
            r = evaluation.evaluate_matcher(m.match, str(DATA / s))
            out[f"{s} min_structure={ms}"] = {k: round(r[k], 3) for k in ("auc3", "auc5", "auc10", "prec3", "ncm")}
            print(s, ms, out[f"{s} min_structure={ms}"], flush=True)
    write_report(out, args.json, show=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
