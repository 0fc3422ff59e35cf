"""Median latency per pair of the matcher's backends and of two peers, measured in one run.

    python -m benchmarks.latency --sizes 320x256,640x512 --json out/latency.json

For each size WxH both images are WxH and the network runs at that working size (the tiny
preset's weights are resolution-independent; the shipped model is used when present); the
shipped matcher as configured (its fixed working size, input images resized) is timed too.
Peers at the same size, same threads: kornia's LoFTR architecture with random weights
(architecture speed only) and ALIKED-t16 + mutual nearest neighbours with the weights in
../shared/peers (skipped with a note when absent). Speeds are compared as ratios from this run.

    python -m benchmarks.latency --variants previous,onnxruntime,onnxruntime_int8,auto \
        --baseline-root ../main_before --json out/variants.json

``--variants``: the shipped matcher on each backend (``auto`` as a user gets it) over the dev sets'
pairs (../shared/data), accuracy by the protocol (evaluation.py) and median time per pair of the
match call, the variants taking turns pair by pair so that a drifting machine load hits all of
them alike. Precision is reported for all the returned matches and for those a verified fit
flags as inliers (``MatchResult.inliers``, the node's ``inliers`` field). ``previous`` is the
default backend of another checkout (``--baseline-root``, e.g. a
worktree of the commit before a change), run in a child process fed the same pairs. A suffix
sets matcher options: ``auto:single`` runs one full-size pass instead of the default guided
passes (``guided_pass`` off), ``auto:guided_passes=1`` any ``option=value[+option=value]``.
"""
from __future__ import annotations

import argparse
import statistics
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import SHARED, machine_stamp, parse_assignments, parse_size, sized_model, textured, write_report


def median_ms(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def project_matcher(size, backend, tmpdir: Path):
    from distillmatch_ros.checkpoint import save_checkpoint
    from distillmatch_ros.matcher import Matcher
    model, card, _ = sized_model(size)
    path = tmpdir / f"tiny_{size[0]}x{size[1]}.pt"
    save_checkpoint(path, model, card)
    return Matcher(path, backend=backend)


def loftr_fn(size):
    from kornia.feature import LoFTR
    net = LoFTR(pretrained=None).eval()
    w, h = size
    a, b = torch.rand(1, 1, h, w), torch.rand(1, 1, h, w)

    def run():
        with torch.inference_mode():
            net({"image0": a, "image1": b})
    return run


def aliked_fn(size, weights: Path):
    from kornia.feature import ALIKED
    net = ALIKED("aliked-t16", max_num_keypoints=2000, detection_threshold=0.2)
    net.load_state_dict(torch.load(weights, map_location="cpu"), strict=False)
    net.eval()
    w, h = size
    a = torch.from_numpy(np.dstack([textured(h, w, 1)] * 3)).permute(2, 0, 1)[None].float() / 255
    b = torch.from_numpy(np.dstack([textured(h, w, 2)] * 3)).permute(2, 0, 1)[None].float() / 255

    def run():
        with torch.inference_mode():
            fa, fb = net(a)[0], net(b)[0]
        s = fb.descriptors @ fa.descriptors.T
        i, j = s.argmax(1), s.argmax(0)
        _ = j[i] == torch.arange(len(i))
    return run


# The child process of ``previous``: reads "set_dir/file.npz" lines, answers JSON lines.
_BASELINE_WORKER = """
import json, sys, time
import numpy as np
from distillmatch_ros import evaluation
from distillmatch_ros.matcher import Matcher
m = Matcher.from_pretrained()
print(json.dumps({"backend": m.backend}), flush=True)
for line in sys.stdin:
    pair = evaluation.load_pair_npz(line.strip())
    t0 = time.perf_counter()
    r = m.match(pair["visible"], pair["thermal"])
    sec = time.perf_counter() - t0
    print(json.dumps({"sec": sec, "kv": r.visible_points.tolist(), "kt": r.thermal_points.tolist(),
                      "inliers": r.inliers.tolist()}), flush=True)
"""


class BaselineMatcher:
    """``Matcher.from_pretrained()`` of another checkout, in a child process (its own imports)."""

    def __init__(self, root: str, threads: int):
        import json
        import os
        import subprocess
        import sys
        env = dict(os.environ, PYTHONPATH=str(Path(root).resolve()), OMP_NUM_THREADS=str(threads))
        self.proc = subprocess.Popen([sys.executable, "-c", _BASELINE_WORKER], cwd=root, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._json = json
        self.backend = self._reply()["backend"]

    def _reply(self):
        """The worker's next JSON line (a checkout may print other lines, e.g. its backend choice)."""
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the baseline worker ended without a reply")
            if line.startswith("{"):
                return self._json.loads(line)

    def evaluate(self, path: str):
        self.proc.stdin.write(path + "\n")
        self.proc.stdin.flush()
        r = self._reply()
        return (np.asarray(r["kv"], float).reshape(-1, 2), np.asarray(r["kt"], float).reshape(-1, 2), r["sec"],
                np.asarray(r["inliers"], bool).reshape(-1))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(30)


def variant_options(name: str, mode: str) -> dict:
    """Matcher options of a variant's mode: ``single`` (one full-size pass, guided_pass off) or
    ``option=value[+option=value]`` (e.g. ``auto:guided_passes=1``)."""
    if mode in ("", "single"):
        return {"guided_pass": False} if mode else {}
    try:
        return parse_assignments(mode)
    except ValueError:
        raise SystemExit(f"variant {name!r}: a mode is 'single' or option=value[+option=value]") from None


def variants_run(args) -> int:
    """Accuracy and time per pair of backend variants on the dev sets, in turns (see the module doc)."""
    import glob
    import os

    from benchmarks.common import DATA
    from distillmatch_ros import evaluation
    from distillmatch_ros.matcher import Matcher
    names = args.variants.split(",")
    runners, labels = {}, {}
    for name in names:
        if name == "previous":
            if not args.baseline_root:
                raise SystemExit("variant 'previous' needs --baseline-root")
            b = BaselineMatcher(args.baseline_root, args.threads)
            runners[name], labels[name] = b.evaluate, f"previous default ({b.backend}, {args.baseline_root})"
            continue
        backend, _, mode = name.partition(":")
        t0 = time.perf_counter()
        m = Matcher.from_pretrained(backend=backend, **variant_options(name, mode))
        start_s = time.perf_counter() - t0

        def run(path, m=m):
            pair = evaluation.load_pair_npz(path)
            t = time.perf_counter()
            r = m.match(pair["visible"], pair["thermal"])
            sec = time.perf_counter() - t
            return r.visible_points, r.thermal_points, sec, r.inliers.astype(bool)
        runners[name], labels[name] = run, f"{m.backend_choice} (start {start_s:.1f} s)"
    report = {**machine_stamp(args.threads), "variants": labels, "sets": {}}
    for s in args.sets.split(","):
        files = sorted(glob.glob(os.path.join(str(DATA), s, "*.npz")))[:args.limit or None]
        if not files:
            print(f"{s}: no pairs under {DATA} (skipped)")
            continue
        rows = {n: [] for n in names}
        for path in files:
            gt = evaluation.load_pair_npz(path)
            for n in names:
                kv, kt, sec, inliers = runners[n](path)
                row = evaluation.evaluate_pair(gt, kv, kt)
                row["sec"] = sec
                row["n_inliers"] = int(inliers.sum())
                row["ncm_inliers"] = int(evaluation.correct_matches(gt, kv[inliers], kt[inliers]).sum())
                rows[n].append(row)
        table = {n: evaluation.summarize(r) for n, r in rows.items()}
        for n, r in rows.items():  # the matches a verified fit flags as inliers (MatchResult.inliers)
            table[n]["prec3_inliers"] = sum(x["ncm_inliers"] for x in r) / max(1, sum(x["n_inliers"] for x in r))
        ref = table[names[0]]
        for n in names:
            t = table[n]
            t["ms"] = t.pop("sec") * 1e3
            t["time_ratio_vs_first"] = t["ms"] / (ref["sec"] * 1e3 if "sec" in ref else ref["ms"])
            t["auc10_minus_first"] = t["auc10"] - ref["auc10"]
            print(f"{s:22s} {n:18s} AUC@3/5/10 {t['auc3']:.3f}/{t['auc5']:.3f}/{t['auc10']:.3f} "
                  f"prec@3 {t['prec3']:.3f} (inliers {t['prec3_inliers']:.3f}) | {t['ms']:6.1f} ms/pair | "
                  f"x{t['time_ratio_vs_first']:.2f} time, "
                  f"{t['auc10_minus_first']:+.3f} AUC@10 vs {names[0]}", flush=True)
        report["sets"][s] = table
    for fn in runners.values():
        if isinstance(getattr(fn, "__self__", None), BaselineMatcher):
            fn.__self__.close()
    write_report(report, args.json, show=False)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="320x256,640x512")
    ap.add_argument("--backends", default="torch,onnxruntime")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--peer-repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--variants", default="", help="compare these backends (and 'previous') on the dev sets")
    ap.add_argument("--sets", default="roadscene_homography,m3svd_homography")
    ap.add_argument("--limit", type=int, default=0, help="--variants: first N pairs of each set (0 = all)")
    ap.add_argument("--baseline-root", default="", help="checkout whose default is the 'previous' variant")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.variants:
        return variants_run(args)
    import tempfile
    tmpdir = Path(tempfile.mkdtemp())
    peers_dir = SHARED / "peers"
    results = {**machine_stamp(args.threads), "torch": torch.__version__, "rows": []}
    for s in args.sizes.split(","):
        size = parse_size(s)
        vis, th = textured(size[1], size[0], 1), textured(size[1], size[0], 2)
        row = {"size": s}
        for be in args.backends.split(","):
            m = project_matcher(size, be, tmpdir)
            row[f"tiny_{be}_ms"] = median_ms(partial(m.match, vis, th), args.repeats, warmup=2)
            print(f"{s} tiny/{be}: {row[f'tiny_{be}_ms']:.1f} ms", flush=True)
        # The product as shipped: its fixed working size whatever the cameras' resolution.
        from distillmatch_ros.matcher import Matcher
        shipped_ms = {}
        for be in args.backends.split(","):
            shipped = Matcher.from_pretrained(backend=be)
            ws = f"{shipped.input_size[0]}x{shipped.input_size[1]}"
            shipped_ms[be] = row[f"shipped_{ws}_{be}_ms"] = median_ms(partial(shipped.match, vis, th), args.repeats,
                                                                       warmup=2)
            print(f"{s} shipped matcher (working {ws}, {be}): {shipped_ms[be]:.1f} ms", flush=True)
        # The CPU product runs ONNX Runtime; compare the peers with it when it was timed.
        shipped_ref = shipped_ms.get("onnxruntime", shipped_ms[be])
        if not args.no_peers:
            row["loftr_random_ms"] = median_ms(loftr_fn(size), args.peer_repeats)
            print(f"{s} LoFTR (random weights): {row['loftr_random_ms']:.1f} ms", flush=True)
            w = peers_dir / "aliked-t16.pth"
            if w.exists():
                row["aliked_t16_ms"] = median_ms(aliked_fn(size, w), args.peer_repeats)
                print(f"{s} ALIKED-t16 + MNN: {row['aliked_t16_ms']:.1f} ms", flush=True)
            else:
                row["aliked_t16_ms"] = None
                print(f"{s} ALIKED-t16 skipped: {w} absent")
        best = min(row[f"tiny_{be}_ms"] for be in args.backends.split(","))
        for peer in ("loftr_random", "aliked_t16"):
            if row.get(f"{peer}_ms"):
                row[f"speedup_vs_{peer}"] = row[f"{peer}_ms"] / best
                row[f"shipped_speedup_vs_{peer}"] = row[f"{peer}_ms"] / shipped_ref
        if "tiny_onnxruntime_ms" in row and "tiny_torch_ms" in row:
            row["onnxruntime_over_torch"] = row["tiny_onnxruntime_ms"] / row["tiny_torch_ms"]
        results["rows"].append(row)
    write_report(results, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
