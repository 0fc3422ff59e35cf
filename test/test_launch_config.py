"""launch/matcher.launch.py and config/matcher.yaml agree with the node's parameter table.

The ``launch`` package is not installable here, so the launch file is checked statically.
"""
import ast
import py_compile
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from distillmatch_ros import node_params

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "matcher.launch.py"


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def _kw(call, key):
    for k in call.keywords:
        if k.arg == key:
            return k.value
    return None


def _launch_args():
    tree = ast.parse(LAUNCH.read_text())
    out = {}
    for call in _calls(tree, "DeclareLaunchArgument"):
        name = ast.literal_eval(call.args[0])
        default = _kw(call, "default_value")
        out[name] = ast.literal_eval(default) if isinstance(default, ast.Constant) else ast.unparse(default)
        assert _kw(call, "description") is not None, f"launch argument {name} has no description"
    return tree, out


def test_launch_file_compiles():
    py_compile.compile(str(LAUNCH), doraise=True)
    tree = ast.parse(LAUNCH.read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)


def test_launch_arguments_agree_with_yaml_and_node():
    tree, args = _launch_args()
    for required in ("params_file", "model", "backend", "namespace", "visible_topic", "thermal_topic"):
        assert required in args, f"launch argument {required} missing"
    yaml_params = yaml.safe_load((ROOT / "config" / "matcher.yaml").read_text())["/**"]["ros__parameters"]
    for name in ("model", "backend", "visible_transport", "thermal_transport"):
        assert args[name] == yaml_params[name] == node_params.DEFAULTS[name]
    assert "matcher.yaml" in args["params_file"] and "fastdds_shm.xml" in args["fastdds_profile"]
    (node,) = _calls(tree, "Node")
    assert ast.literal_eval(_kw(node, "package")) == "distillmatch_ros"
    assert ast.literal_eval(_kw(node, "executable")) == "matcher_node"
    # parameter overrides name real parameters
    overrides = [d for d in ast.walk(_kw(node, "parameters")) if isinstance(d, ast.Dict)]
    for d in overrides:
        for key in d.keys:
            assert ast.literal_eval(key) in node_params.SPECS
    # remaps: the node's relative input topic names, defaulting to themselves
    remaps = {ast.literal_eval(t.elts[0]): ast.unparse(t.elts[1]) for t in _kw(node, "remappings").elts}
    assert set(remaps) == {"visible/image_raw", "thermal/image_raw", "visible/camera_info"}
    assert args["visible_topic"] == "visible/image_raw" and args["thermal_topic"] == "thermal/image_raw"
    setup = (ROOT / "setup.py").read_text()
    assert "matcher_node = distillmatch_ros.matcher_node:main" in setup


def test_yaml_matches_parameter_table():
    yaml_params = yaml.safe_load((ROOT / "config" / "matcher.yaml").read_text())["/**"]["ros__parameters"]
    assert set(yaml_params) == set(node_params.SPECS)
    for name, value in yaml_params.items():
        spec = node_params.SPECS[name]
        assert type(value) is type(spec.default), f"{name}: yaml type {type(value).__name__}"
        assert value == spec.default, f"{name}: yaml {value!r} != declared default {spec.default!r}"
        assert spec.problem(value, strict=True) is None


def test_yaml_and_parameter_doc_are_generated_from_the_definitions():
    assert (ROOT / "config" / "matcher.yaml").read_text() == node_params.yaml_text(), \
        "regenerate config/matcher.yaml from node_params.yaml_text()"
    assert node_params.markdown_table() in (ROOT / "docs" / "ROS_NODE.md").read_text(), \
        "regenerate the parameter table of docs/ROS_NODE.md from node_params.markdown_table()"


def test_fastdds_profile_fits_full_size_images():
    ns = {"d": "http://www.eprosima.com"}
    root = ET.parse(ROOT / "config" / "fastdds_shm.xml").getroot()
    shm = [t for t in root.iterfind(".//d:transport_descriptor", ns) if t.find("d:type", ns).text == "SHM"]
    assert shm, "no SHM transport in the profile"
    segment = int(shm[0].find("d:segment_size", ns).text)
    max_msg = int(shm[0].find("d:maxMessageSize", ns).text)
    bgr_1280x1024 = 1280 * 1024 * 3 + 1024  # + header
    assert max_msg >= bgr_1280x1024 and segment >= 4 * bgr_1280x1024
    part = root.find(".//d:participant", ns)
    assert part.get("is_default_profile") == "true"
    used = {t.text for t in part.iterfind(".//d:userTransports/d:transport_id", ns)}
    assert shm[0].find("d:transport_id", ns).text in used
