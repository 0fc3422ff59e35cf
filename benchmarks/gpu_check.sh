#!/usr/bin/env bash
# One call on a GPU machine (a few minutes): TensorRT build + parity + FP16/FP32 timing at 640x512,
# then the node end to end at 640x512 thermal on the TensorRT backend.
#   OUT=out bash benchmarks/gpu_check.sh     # from the repository root
# Needs torch with CUDA, torch-tensorrt (pip install 'distillmatch_ros[tensorrt]') and, for the
# node step, the ROS wheels (scripts/setup_env.sh) — each missing part is reported, not fatal.
set -u
OUT=${OUT:-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -m benchmarks.gpu_check --size 640x512 --json "$OUT/gpu_check.json" 2>&1 | tee "$OUT/gpu_check.log"
if python3 -c "import rclpy" 2>/dev/null; then
  python3 -m benchmarks.node_latency --backends tensorrt --thermal 640x512 --json "$OUT/node_trt.json" 2>&1 | tee "$OUT/node_trt.log"
else
  echo "node step skipped: rclpy not importable on this machine" | tee "$OUT/node_trt.log"
fi
