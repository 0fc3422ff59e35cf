#!/usr/bin/env bash
# Create .venv with everything the package, its node and its tests need, from scratch.
# Idempotent: a second run only checks. Used by the README's commands and by .ci/run.
#   scripts/setup_env.sh            # CPU PyTorch, ROS 2 Kilted wheels, test + train extras
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# Pin torch first so nothing later pulls a multi-GB CUDA build on a CPU machine.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[ros,test,train]"
# The distillmatch_msgs interface package (Correspondences.msg), built into this venv.
bash scripts/build_interfaces.sh --deps
python - <<'PY'
import distillmatch_ros, rclpy, torch, onnxruntime, cv2, rosbags  # noqa: F401
from distillmatch_msgs.msg import Correspondences  # noqa: F401
print(f"environment ready: torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, OpenCV {cv2.__version__}")
PY
