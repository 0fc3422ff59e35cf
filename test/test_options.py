"""Each setting has one definition; the Matcher, the pipeline, the node's parameters and the
command line agree with it, and owners refuse bad values."""
from __future__ import annotations

import inspect

import pytest

from distillmatch_ros import calibration, cli, matcher, node_params, sync
from distillmatch_ros.bag.calibrate import calibrate_bag
from distillmatch_ros.bag.replay import bag_eval
from distillmatch_ros.matcher import Matcher
from distillmatch_ros.options import Option
from distillmatch_ros.pipeline import PipelineConfig

OWNERS = {"matcher": matcher.OPTIONS, "pipeline": PipelineConfig.options(), "sync": sync.OPTIONS,
          "calibration": calibration.OPTIONS}


@pytest.fixture(scope="module")
def m(tiny_checkpoint):
    return Matcher(tiny_checkpoint, backend="torch")


@pytest.mark.parametrize("bad, words", [
    ({"thermal_low_pct": 99.0, "thermal_high_pct": 1.0}, "thermal_low_pct"),  # inverted: each in the other's range
    ({"thermal_low_pct": 40.0, "thermal_high_pct": 99.0, "thermal_clahe": True}, None),  # fine
    ({"ransac_threshold": -1.0}, "ransac_threshold"),
    ({"match_threshold": 1.5}, "match_threshold"),
    ({"match_threshold": -0.1}, "match_threshold"),
    ({"verify_min_inliers": 2}, "verify_min_inliers"),
    ({"thermal_clahe": "yes"}, "thermal_clahe"),
    ({"ransac_max_iters": float("nan")}, "ransac_max_iters"),
])
def test_set_options_refuses_bad_values_and_changes_nothing(m, bad, words):
    before = dict(m.options)
    if words is None:
        m.set_options(**bad)
        assert all(m.options[k] == v for k, v in bad.items())
        m.set_options(**{k: before[k] for k in bad})
        return
    with pytest.raises(ValueError, match=words):
        m.set_options(**bad)
    assert m.options == before


def test_inverted_percentiles_refused_also_when_set_one_at_a_time(m):
    m.set_options(thermal_low_pct=50.0, thermal_high_pct=60.0)
    try:
        with pytest.raises(ValueError, match="below thermal_high_pct"):
            m.set_options(thermal_high_pct=50.0)
    finally:
        m.set_options(thermal_low_pct=1.0, thermal_high_pct=99.0)


def test_match_threshold_none_is_the_checkpoints_own(m):
    m.set_options(match_threshold=None)
    assert m.options["match_threshold"] == pytest.approx(float(m.model.config["match_threshold"]))


def test_option_types():
    o = Option("n", 3, "an int", range=(1, 10))
    assert o.check(4.0) == 4 and type(o.check(4.0)) is int  # whole floats for int settings (API)
    assert o.problem(4.0, strict=True)  # ROS parameters keep their declared types
    assert o.problem(True) and o.problem(4.5) and o.problem(11)
    f = Option("x", 0.5, "a float", range=(0.0, 1.0))
    assert f.check(1, strict=True) == 1.0 and type(f.check(1, strict=True)) is float
    assert f.problem(float("inf")) and f.problem("0.5") and f.problem(False)
    assert Option("s", "a", "choice", choices=("a", "b")).problem("c")


def test_pipeline_config_validates_every_setting():
    for opt in PipelineConfig.options():
        if opt.range is not None:
            with pytest.raises(ValueError, match=opt.name):
                PipelineConfig(**{opt.name: opt.type(opt.range[1]) + 1}).validated()
    with pytest.raises(ValueError, match="unknown"):
        PipelineConfig().changed(bogus=1)
    assert PipelineConfig().changed(fusion_alpha=1).fusion_alpha == 1.0


def test_node_parameters_derive_from_the_owners():
    """Every owned setting is a node parameter with the owner's range, choices and default
    (or a documented node default that the owner accepts)."""
    seen = set()
    for owner, options in OWNERS.items():
        for o in options:
            spec = node_params.SPECS[o.parameter]
            seen.add(o.parameter)
            assert node_params.OWNER[o.parameter] == (owner, o.name)
            assert (spec.range, spec.choices, spec.dynamic) == (o.range, o.choices, True), o.name
            if o.parameter in node_params.NODE_DEFAULTS:
                assert spec.default == node_params.NODE_DEFAULTS[o.parameter][0]
                assert o.problem(spec.default) is None
            else:
                assert spec.default == o.default and type(spec.default) is type(o.default), o.name
                assert spec.doc == o.doc
    node_only = {n for n, (owner, _) in node_params.OWNER.items() if owner == "node"}
    assert seen | node_only == set(node_params.SPECS)
    assert set(node_params.NODE_DEFAULTS) <= seen


def _defaults(parser_args):
    return cli.build_parser().parse_args(parser_args)


def test_bag_commands_default_to_the_node_settings():
    for argv in (["bag-eval", "b", "--report", "r"], ["calibrate", "b", "--out", "c.yaml"]):
        a = _defaults(argv)
        assert a.slop == sync.DEFAULTS["slop"] == node_params.DEFAULTS["slop"]
        assert a.queue_size == sync.DEFAULTS["queue_size"] == node_params.DEFAULTS["queue_size"]
    a = _defaults(["bag-eval", "b", "--report", "r"])
    assert (a.rig_mode == "on") == PipelineConfig().rig_mode == node_params.DEFAULTS["rig_mode"]
    assert a.match_rate is None  # None: PipelineConfig's own
    a = _defaults(["calibrate", "b", "--out", "c.yaml"])
    assert a.frames == calibration.DEFAULTS["frames"] == node_params.DEFAULTS["calibration_frames"]
    for fn in (bag_eval, calibrate_bag):
        params = inspect.signature(fn).parameters
        assert params["slop"].default == sync.DEFAULTS["slop"]
        assert params["queue_size"].default == sync.DEFAULTS["queue_size"]
    assert inspect.signature(calibrate_bag).parameters["frames"].default == calibration.DEFAULTS["frames"]
    assert inspect.signature(sync.ApproximateTimeSynchronizer).parameters["slop"].default == sync.DEFAULTS["slop"]
    a = _defaults(["match", "v.png", "t.png", "--out", "o.json"])
    assert a.threshold is None and a.fusion_mode == PipelineConfig().fusion_mode
    assert a.backend == node_params.DEFAULTS["backend"]


def test_cli_threshold_out_of_range_is_one_error_line(tiny_checkpoint, tmp_path, capsys):
    import cv2
    import numpy as np
    img = np.random.default_rng(0).integers(0, 255, (64, 80), np.uint8)
    for name in ("v.png", "t.png"):
        cv2.imwrite(str(tmp_path / name), img)
    rc = cli.main(["match", str(tmp_path / "v.png"), str(tmp_path / "t.png"), "--out", str(tmp_path / "o.json"),
                   "--model", str(tiny_checkpoint), "--backend", "torch", "--threshold", "1.5"])
    assert rc == 2 and "match_threshold must be in [0.0, 1.0]" in capsys.readouterr().err
