"""Every option of every subcommand, given a bad value, stops the command before any work:
exit status 2, one ``error:`` line naming the option, no traceback, nothing written.

The options are read from the parser, so a new option is walked too. The work a subcommand
would start (loading a model, writing a bag, the demo) is replaced by a guard, so nothing slow
runs even when a check is missing; the guard then fails the test.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from distillmatch_ros import cli
from distillmatch_ros.bag import demo
from distillmatch_ros.bag import make_bag as make_bag_module
from distillmatch_ros.matcher import Matcher
from distillmatch_ros.testing.fakes import write_pairs_folder

#: The smallest valid command of each subcommand: positionals and options. {data} holds the
#: inputs, {out} is where outputs go (empty before and after every bad command).
BASE = {
    "match": (["{data}/visible.png", "{data}/thermal.png"], {"--out": "{out}/r.json"}),
    "bag-eval": (["{data}/bag"], {"--report": "{out}/report"}),
    "calibrate": (["{data}/bag"], {"--out": "{out}/rig.yaml"}),
    "make-bag": (["{out}/bag"], {"--pairs-dir": "{data}/pairs"}),
    "demo": ([], {"--out": "{out}/demo"}),
}
#: Bad paths by kind of output: {dir} is an existing folder, {file} an existing file.
BAD_OUTPUTS = {
    "output file": ["", "{dir}", "{file}/x.json"],
    "output image": ["", "{dir}", "{file}/x.png", "{out}/x.xyz", "{out}/no_extension"],
    "output folder": ["", "{file}", "{file}/x"],
    "output new": ["", "{dir}", "{file}", "{file}/x"],
}


class WorkStarted(Exception):
    """Raised where a subcommand would start its work."""


def _subcommands():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def _walked(parser):
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


def _bad_values(action):
    """Out-of-range, wrong-type and empty values for one option, from how it is declared."""
    if action.nargs == 0:
        return ["=1"]  # a flag takes no value
    if action.choices is not None:
        return ["nope", ""]
    kind = getattr(action.type, "kind", None)
    option = getattr(action.type, "option", None)
    if kind == "number":
        assert option.range is not None, f"{action.dest}: a number without a range"
        lo, hi = option.range
        wrong = [f"{lo}.5"] if option.type is int else ["nan", "inf"]
        return [str(lo - 1), str(hi + 1), "abc", "", *wrong]
    if kind == "size":
        lo, hi = option.range
        return [f"{lo - 1}x{lo}", f"{lo}x{hi + 1}", "64", "axb", ""]
    if kind == "text":
        return [""]
    if kind in BAD_OUTPUTS:
        return BAD_OUTPUTS[kind]
    return [None]  # not checked by the one rule: fails below


CASES = [(name, action.option_strings[-1] if action.option_strings else action.dest, bad)
         for name, parser in _subcommands().items() for action in _walked(parser) for bad in _bad_values(action)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from distillmatch_ros.bag.make_bag import Pair, make_bag
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    pairs = []
    for k in range(2):
        v = cv2.resize(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8), (128, 96), interpolation=cv2.INTER_CUBIC)
        pairs.append(Pair(v, 255 - cv2.cvtColor(v, cv2.COLOR_BGR2GRAY), np.eye(3), f"p{k}"))
    cv2.imwrite(str(root / "visible.png"), pairs[0].visible)
    cv2.imwrite(str(root / "thermal.png"), pairs[0].thermal)
    write_pairs_folder(root / "pairs", pairs)
    make_bag(str(root / "bag"), pairs)
    (root / "a_folder").mkdir()
    (root / "a_file").write_text("x")
    (root / "out").mkdir()
    return root


@pytest.fixture(autouse=True)
def no_work(monkeypatch):
    def guard(*args, **kwargs):
        raise WorkStarted()
    monkeypatch.setattr(Matcher, "from_pretrained", classmethod(guard))
    monkeypatch.setattr(make_bag_module, "make_bag", guard)
    monkeypatch.setattr(demo, "run_demo", guard)


def _fill(token: str, data: Path) -> str:
    return token.format(data=data, out=data / "out", dir=data / "a_folder", file=data / "a_file")


def _argv(name: str, parser, target: str, bad: str, data: Path):
    positionals, options = list(BASE[name][0]), dict(BASE[name][1])
    action = next(a for a in _walked(parser) if target in a.option_strings or target == a.dest)
    extra = []
    if not action.option_strings:
        positionals[[a for a in _walked(parser) if not a.option_strings].index(action)] = bad
    else:
        for group in parser._mutually_exclusive_groups:  # the base's choice would conflict
            if action in group._group_actions:
                for other in group._group_actions:
                    for flag in other.option_strings:
                        options.pop(flag, None)
        options.pop(target, None)
        extra = [target + bad] if action.nargs == 0 else [target, bad]
    argv = [name, *positionals, *(t for kv in options.items() for t in kv), *extra]
    return action, [_fill(t, data) for t in argv]


def _files(root: Path):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_every_subcommand_with_options_has_a_base_command():
    assert set(BASE) == {name for name, parser in _subcommands().items() if _walked(parser)}
    assert len(CASES) > 100


@pytest.mark.parametrize("name", sorted(BASE))
def test_base_commands_pass_every_check(name, data):
    """The base commands are valid: each reaches its work, so a bad value is what stops them."""
    argv = [name, *BASE[name][0], *(t for kv in BASE[name][1].items() for t in kv)]
    with pytest.raises(WorkStarted):
        cli.main([_fill(t, data) for t in argv])


@pytest.mark.parametrize("name,target,bad", CASES, ids=[f"{n} {t} {b!r}" for n, t, b in CASES])
def test_bad_value_is_one_error_line_and_nothing_written(name, target, bad, data, capsys):
    assert bad is not None, f"{name} {target} has no check: give it a type from distillmatch_ros.arguments"
    action, argv = _argv(name, _subcommands()[name], target, bad, data)
    before = _files(data)
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, (argv, err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert (target if action.option_strings else (action.metavar or action.dest)) in lines[0]
    option = getattr(action.type, "option", None)
    if option is not None and option.range is not None and getattr(action.type, "kind", "") == "number" \
            and bad in (str(option.range[0] - 1), str(option.range[1] + 1)):
        assert f"[{option.range[0]}, {option.range[1]}]" in lines[0]
    assert out == "" and _files(data) == before


#: The cases of the issue that had a traceback or were silently accepted, with what the one
#: line must say.
REPORTED = [
    (["match", "{data}/visible.png", "{data}/thermal.png", "--out", "{dir}"], "--out", "is a folder"),
    (["match", "{data}/visible.png", "{data}/thermal.png", "--out", "{out}/r.json", "--fused", "{out}/f.xyz"],
     "--fused", "no image writer"),
    (["bag-eval", "{data}/bag", "--report", "{out}/r", "--slop", "-1"], "--slop", "[0.0, 1.0]"),
    (["bag-eval", "{data}/bag", "--report", "{out}/r", "--queue-size", "0"], "--queue-size", "[1, 100]"),
    (["calibrate", "{data}/bag", "--out", "{out}/c.yaml", "--slop", "-1"], "--slop", "[0.0, 1.0]"),
    (["match", "{data}/visible.png", "{data}/thermal.png", "--out", "{out}/r.json", "--backend", "torch",
      "--device", "banana"], "--device", "cpu, cuda or cuda:N"),
    (["make-bag", "{out}/b", "--pairs-dir", "{data}/pairs", "--visible-size", "0x0"], "--visible-size", "[8, 16384]"),
    (["make-bag", "{out}/b", "--pairs-dir", "{data}/pairs", "--limit", "-1"], "--limit", "[1, 1000000]"),
    (["make-bag", "{out}/b", "--pairs-dir", "{data}/pairs", "--compressed", "--jpeg-quality", "500"],
     "--jpeg-quality", "[1, 100]"),
    (["bag-eval", "{data}/bag", "--report", "{out}/r", "--examples", "-1"], "--examples", "[0, 1000]"),
    (["match", "{data}/visible.png", "{data}/thermal.png", "--out", "{out}/r.json", "--device", "banana"],
     "--device", "cpu, cuda or cuda:N"),
    (["match", "{data}/visible.png", "{data}/thermal.png", "--out", "{out}/r.json", "--device", "cuda:99"],
     "--device", "cuda:99"),
]


@pytest.mark.parametrize("argv,flag,says", REPORTED, ids=[" ".join(a[:1] + a[-2:]) for a, _, _ in REPORTED])
def test_reported_cases_are_one_error_line(argv, flag, says, data, capsys):
    before = _files(data)
    rc = cli.main([_fill(t, data) for t in argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith(f"error: argument {flag}: ") and says in err, err
    assert _files(data) == before


def test_derived_ground_truth_path_is_checked_before_work(data, capsys):
    (data / "out" / "b.gt_homography.json").mkdir()
    try:
        rc = cli.main(["make-bag", str(data / "out" / "b"), "--pairs-dir", str(data / "pairs")])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error: ground truth file: ") and "is a folder" in err, err
    finally:
        (data / "out" / "b.gt_homography.json").rmdir()


def test_match_makes_the_folders_of_its_outputs(data, tmp_path, tiny_checkpoint, monkeypatch, capsys):
    """The images are written after the JSON, into folders made as for --out."""
    monkeypatch.undo()  # the real matcher this time
    rc = cli.main(["match", str(data / "visible.png"), str(data / "thermal.png"), "--out", str(tmp_path / "r.json"),
                   "--fused", str(tmp_path / "a" / "f.png"), "--viz", str(tmp_path / "b" / "m.jpg"),
                   "--model", str(tiny_checkpoint), "--backend", "torch", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "r.json").read_text())["backend"] == "torch"
    assert cv2.imread(str(tmp_path / "a" / "f.png")).shape[:2] == (96, 128)
    assert cv2.imread(str(tmp_path / "b" / "m.jpg")) is not None
