"""The package as robots install it, not as an editable checkout.

* **wheel**: a wheel built from the checkout, installed into a fresh venv (no ROS), runs
  ``distillmatch demo`` from another folder with the real V2I-GAN, and both
  ``Matcher.from_pretrained()`` and ``PseudoInfrared.from_pretrained()`` load from
  ``<venv>/share/distillmatch_ros/models``.
* **colcon**: both packages (the root ament_python package and interfaces/distillmatch_msgs)
  built with colcon from the PyPI wheels into a temporary workspace; the ament index knows both,
  the share folder holds launch/, config/ and both models, and ``lib/distillmatch_ros/matcher_node``
  from the install space loads the shipped model from there and publishes on a pair.

They install packages and build (about two minutes on a 2-core machine). They are part of the
README's test command, which ``.ci/run`` runs as it is; DISTILLMATCH_SKIP_INSTALL_CHECKS=1 skips
them in a quick local run.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distillmatch_ros.testing.node_harness import Tester, interfaces_available, ros_env, textured_pair

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    os.environ.get("DISTILLMATCH_SKIP_INSTALL_CHECKS") == "1",
    reason="install-layout checks (wheel into a fresh venv, colcon workspace) skipped: "
           "DISTILLMATCH_SKIP_INSTALL_CHECKS=1")

# colcon and the extensions a ROS workspace build uses; the rest (catkin_pkg, empy, setuptools)
# comes from the environment that holds the ROS wheels, as on a robot.
COLCON = ["colcon-core", "colcon-ros", "colcon-cmake", "colcon-library-path", "colcon-pkg-config",
          "colcon-python-setup-py", "colcon-recursive-crawl", "colcon-test-result", "distlib"]
SOURCE_IGNORE = shutil.ignore_patterns(".git", ".venv*", "build", "install", "log", ".cache", "runs", "out",
                                       "__pycache__", "*.egg-info", ".pytest_cache", ".whl", ".device_data")


def _clean_env(**extra) -> dict:
    """The environment of a user's shell: no PYTHONPATH into the checkout, no model override."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "DISTILLMATCH_MODEL_DIR", "AMENT_PREFIX_PATH", "VIRTUAL_ENV",
                        "_ROS_WHEELS_BOOTSTRAP_COMPLETE", "LD_LIBRARY_PATH")}
    env.update(extra)
    return env


def _run(cmd, cwd, env, timeout=900, what=""):
    proc = subprocess.run(cmd, cwd=str(cwd), env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{what or cmd[0]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return proc.stdout


# -- wheel ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    """A wheel built from a copy of the checkout, installed into a fresh venv without ROS."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=SOURCE_IGNORE)  # building writes build/ into the source folder
    env = _clean_env()
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
          str(src)], tmp, env, what="pip wheel")
    (wheel,) = (tmp / "dist").glob("distillmatch_ros-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp, env, what="venv")
    py = venv / "bin" / "python"
    torch_pin = f"torch=={__import__('torch').__version__.split('+')[0]}"  # the CPU build CI already has
    _run([str(py), "-m", "pip", "install", "-q", "--no-compile", torch_pin, str(wheel)], tmp, env,
         what="pip install wheel")
    return venv, wheel


def test_wheel_installs_models_into_share(wheel_venv):
    import zipfile
    venv, wheel = wheel_venv
    names = zipfile.ZipFile(wheel).namelist()
    data = [n.split(".data/data/", 1)[1] for n in names if ".data/data/" in n]
    for need in ("share/distillmatch_ros/models/distillmatch_tiny.pt", "share/distillmatch_ros/models/v2i_gan.pt",
                 "share/distillmatch_ros/config/matcher.yaml", "share/distillmatch_ros/launch/matcher.launch.py",
                 "share/distillmatch_ros/msg/Correspondences.msg"):
        assert need in data, need
    assert not any(n.startswith("models/") for n in names)  # no stray top-level package


def test_wheel_from_pretrained_and_demo_from_another_folder(wheel_venv, tmp_path):
    venv, _ = wheel_venv
    share = venv / "share" / "distillmatch_ros" / "models"
    env = _clean_env(OMP_NUM_THREADS="1")
    out = _run([str(venv / "bin" / "python"), "-c", (
        "import json, distillmatch_ros\n"
        "from distillmatch_ros import Matcher, PseudoInfrared\n"
        "from distillmatch_ros.model_files import resolve\n"
        "m = Matcher.from_pretrained(backend='torch'); g = PseudoInfrared.from_pretrained()\n"
        "print(json.dumps({'module': distillmatch_ros.__file__, 'matcher': str(m.model_path),\n"
        "                  'gan': str(resolve(None, 'v2i_gan')), 'gan_card': g.card.get('name')}))")],
        tmp_path, env, what="from_pretrained in the wheel venv")
    got = json.loads(out.strip().splitlines()[-1])
    assert got["module"].startswith(str(venv / "lib")), got
    assert got["matcher"] == str(share / "distillmatch_tiny.pt") and got["gan"] == str(share / "v2i_gan.pt"), got
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    t0 = time.monotonic()
    log = _run([str(venv / "bin" / "distillmatch"), "demo", "--out", "demo", "--views", "1", "--no-progress",
                "--backend", "onnxruntime"], elsewhere, env, what="distillmatch demo")
    assert f"thermal from: V2I-GAN ({share / 'v2i_gan.pt'})" in log, log
    report = json.loads((elsewhere / "demo" / "report" / "report.json").read_text())
    assert report["pairs_evaluated"] >= 3 and "stand-in" not in report["info"]["demo"]["thermal_source"]
    assert (elsewhere / "demo" / "report" / "fused_examples.jpg").stat().st_size > 0
    print(f"wheel demo: {time.monotonic() - t0:.0f} s, {report['pairs_evaluated']} pairs")


# -- colcon -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def colcon_install(tmp_path_factory):
    """colcon build of both packages into a temporary workspace; returns (install dir, env)."""
    if not interfaces_available():
        pytest.skip("the ROS build tools are not in this venv: run scripts/setup_env.sh")
    tmp = tmp_path_factory.mktemp("colcon")
    tools = tmp / "colcon_tools"
    env = _clean_env()
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tools), *COLCON], tmp, env,
         what="pip install colcon")
    ws = tmp / "ws"
    src = ws / "src" / "distillmatch_ros"
    shutil.copytree(REPO, src, ignore=SOURCE_IGNORE)  # as a user clones it into src/
    venv = Path(sys.prefix)
    build_env = _clean_env(PYTHONPATH=str(tools), AMENT_PREFIX_PATH=str(venv), VIRTUAL_ENV=str(venv),
                           PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    _run([sys.executable, str(tools / "bin" / "colcon"), "build", "--event-handlers", "console_direct-",
          "--base-paths", "src/distillmatch_ros", "src/distillmatch_ros/interfaces/distillmatch_msgs",
          "--cmake-args", "-DBUILD_TESTING=OFF", f"-DPython3_EXECUTABLE={sys.executable}"],
         ws, build_env, timeout=900, what="colcon build")
    install = ws / "install"
    # What a user's shell gets from `. install/setup.sh` (colcon's POSIX setup script).
    dump = _run(["sh", "-c", f". '{install / 'setup.sh'}' && env -0"], ws, _clean_env(), what="setup.sh")
    sourced = dict(line.split("=", 1) for line in dump.split("\0") if "=" in line)
    return install, sourced


def test_colcon_ament_index_and_share_folder(colcon_install):
    install, env = colcon_install
    out = _run([sys.executable, "-c", (
        "import json\nfrom ament_index_python.packages import get_packages_with_prefixes\n"
        "print(json.dumps({k: v for k, v in get_packages_with_prefixes().items() if k.startswith('distillmatch')}))")],
        install, env, what="ament index")
    assert json.loads(out.strip().splitlines()[-1]) == {
        "distillmatch_ros": str(install / "distillmatch_ros"), "distillmatch_msgs": str(install / "distillmatch_msgs")}
    share = install / "distillmatch_ros" / "share" / "distillmatch_ros"
    for rel in ("launch/matcher.launch.py", "config/matcher.yaml", "config/fastdds_shm.xml",
                "models/distillmatch_tiny.pt", "models/v2i_gan.pt", "package.xml"):
        assert (share / rel).is_file(), rel
    assert (install / "distillmatch_msgs" / "share" / "distillmatch_msgs" / "msg" / "Correspondences.msg").is_file()
    assert os.access(install / "distillmatch_ros" / "lib" / "distillmatch_ros" / "matcher_node", os.X_OK)


def test_colcon_matcher_node_runs_from_the_install_space(colcon_install, tmp_path):
    install, sourced = colcon_install
    share = install / "distillmatch_ros" / "share" / "distillmatch_ros"
    env = dict(sourced, **ros_env())
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(share / "config" / "fastdds_shm.xml")  # as the README says
    ns = "/dm_colcon"
    cmd = [str(install / "distillmatch_ros" / "lib" / "distillmatch_ros" / "matcher_node"), "--ros-args",
           "--params-file", str(share / "config" / "matcher.yaml"), "-p", "backend:=onnxruntime",
           "-p", "num_threads:=1", "-p", "rig_mode:=false", "-r", f"__ns:={ns}"]
    log_path = tmp_path / "node.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path))
    tester = None
    try:
        deadline = time.monotonic() + 180
        while "matcher_node ready" not in log_path.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, f"node exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.3)
        text = log_path.read_text()
        # The shipped default model, found through the install space (not the source checkout).
        assert f"matcher_node ready: model {share / 'models' / 'distillmatch_tiny.pt'}" in text, text[-3000:]
        tester = Tester(ns)
        tester.wait_connected(60)
        vis, th, _ = textured_pair(0, vis_size=(640, 512), th_size=(320, 256))
        stamp = tester.publish_pair(vis, th)
        tester.wait_for(lambda: tester.peek("corr"), 120, "correspondences from the colcon-installed node")
        corr = tester.take("corr")[-1]
        assert corr.header.stamp.sec * 10**9 + corr.header.stamp.nanosec == stamp
        assert corr.matched and corr.backend == "onnxruntime" and (corr.thermal_width, corr.visible_width) == (320, 640)
    finally:
        if tester is not None:
            tester.close()
        if proc.poll() is None:
            proc.send_signal(2)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, log_path.read_text()[-2000:]
