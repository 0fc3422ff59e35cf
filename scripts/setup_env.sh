#!/usr/bin/env bash
# Create a virtual environment with everything the package, its node and its tests need, from scratch.
# Idempotent: a second run only checks. Used by the README's commands and by .ci/run.
#   scripts/setup_env.sh              # .venv: CPU PyTorch, ROS 2 Kilted wheels, test + train extras
#   scripts/setup_env.sh jazzy        # .venv-jazzy: the same with the ROS 2 Jazzy (LTS) wheels
# Environment: VENV_DIR (default .venv, or .venv-jazzy for jazzy), EXTRAS (default test,train),
# PYTHON (interpreter that creates the venv). One venv holds one distro's wheels: never mix them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DISTRO="${1:-kilted}"
case "$DISTRO" in
  kilted) ROS_EXTRA=ros; DEFAULT_VENV=.venv ;;
  jazzy) ROS_EXTRA=ros-jazzy; DEFAULT_VENV=.venv-jazzy ;;
  *) echo "usage: $0 [kilted|jazzy]" >&2; exit 2 ;;
esac
VENV="${VENV_DIR:-$DEFAULT_VENV}"
EXTRAS="${EXTRAS-test,train}"
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
. "$VENV/bin/activate"
if [ -n "$(python -m pip list 2>/dev/null | grep -E '^ros-(kilted|jazzy)-rclpy ' | grep -v "ros-$DISTRO-" || true)" ]; then
  echo "setup_env: $VENV holds another distro's ROS wheels; remove it or set VENV_DIR" >&2
  exit 2
fi
python -m pip install -q --upgrade pip
# Pin torch first so nothing later pulls a multi-GB CUDA build on a CPU machine.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[$ROS_EXTRA${EXTRAS:+,$EXTRAS}]"
# The distillmatch_msgs interface package (Correspondences.msg), built into this venv.
ROS_WHEEL_DISTRO="$DISTRO" bash scripts/build_interfaces.sh --deps
python - <<'PY'
import distillmatch_ros, rclpy, torch, onnxruntime, cv2, rosbags  # noqa: F401
from distillmatch_msgs.msg import Correspondences  # noqa: F401
print(f"environment ready: torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, OpenCV {cv2.__version__}")
PY
# backend=auto on this CPU: build the INT8 models and measure every CPU backend for the shipped
# model once, now, rather than at the first start of the node or the demo (cpu_choice.py; a record
# in the cache, reused after; a first start without it measures only the FP32 backends).
if [ "${DISTILLMATCH_SKIP_CPU_CHOICE:-0}" != 1 ]; then
  python -m distillmatch_ros.cpu_prepare --if-missing
fi
