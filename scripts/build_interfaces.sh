#!/usr/bin/env bash
# Build the distillmatch_msgs interface package (interfaces/distillmatch_msgs) and install it into
# the active Python environment's prefix, where rclpy finds it with no extra environment.
# For a colcon workspace on a robot, build it with colcon instead (see README, "Topics and messages").
#
#   scripts/build_interfaces.sh            # build + install (skipped when already up to date)
#   scripts/build_interfaces.sh --deps     # first pip-install the ROS build tools it needs
#   scripts/build_interfaces.sh --force    # rebuild even if up to date
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PKG="$ROOT/interfaces/distillmatch_msgs"
PY="${PYTHON:-python}"
PREFIX="$("$PY" -c 'import sys; print(sys.prefix)')"
# The ROS distro of the wheels in this environment (ros-kilted-* or ros-jazzy-*), unless given.
DISTRO="${ROS_WHEEL_DISTRO:-$("$PY" - <<'PY'
import importlib.metadata as md
names = {(d.metadata["Name"] or "").lower() for d in md.distributions()}
print(next((d for d in ("jazzy", "kilted") if f"ros-{d}-rclpy" in names), "kilted"))
PY
)}"
BUILD="$ROOT/build/distillmatch_msgs-$DISTRO"
DEPS=0; FORCE=0
for arg in "$@"; do
  case "$arg" in
    --deps) DEPS=1 ;;
    --force) FORCE=1 ;;
    *) echo "usage: $0 [--deps] [--force]" >&2; exit 2 ;;
  esac
done

if [ "$PREFIX" = "$("$PY" -c 'import sys; print(sys.base_prefix)')" ]; then
  echo "build_interfaces: activate the virtual environment that holds the ROS wheels first" >&2
  exit 2
fi

# The wheels of rosidl_default_generators do not pull in everything a build needs.
BUILD_DEPS=(rosidl-default-generators rosidl-core-generators ament-cmake ament-cmake-include-directories
            ament-package)
case "$DISTRO" in
  # Jazzy has no separate ament_cmake_ros_core; its ament_cmake_ros finds the test helpers at configure time.
  jazzy) BUILD_DEPS+=(ament-cmake-ros ament-cmake-gmock ament-cmake-gtest ament-cmake-pytest python-cmake-module) ;;
  *) BUILD_DEPS+=(ament-cmake-ros-core) ;;
esac
if [ "$DEPS" = 1 ]; then
  "$PY" -m pip install -q "${BUILD_DEPS[@]/#/ros-$DISTRO-}" catkin-pkg
fi
if [ ! -d "$PREFIX/share/rosidl_default_generators" ] || [ ! -d "$PREFIX/share/ament_cmake_include_directories" ]; then
  echo "build_interfaces: ROS build tools missing in $PREFIX; rerun with --deps" >&2
  exit 2
fi

# Up to date when the installed definition equals the source one and the module imports.
STAMP="$PREFIX/share/distillmatch_msgs/msg/Correspondences.msg"
if [ "$FORCE" = 0 ] && cmp -s "$PKG/msg/Correspondences.msg" "$STAMP" \
   && (cd / && "$PY" -c 'import distillmatch_msgs.msg' 2>/dev/null); then
  echo "build_interfaces: distillmatch_msgs is up to date in $PREFIX"
  exit 0
fi

# A build folder configured for another prefix (e.g. a removed venv) caches its paths: start over.
if [ -f "$BUILD/.prefix" ] && [ "$(cat "$BUILD/.prefix")" != "$PREFIX" ]; then
  rm -rf "$BUILD"
fi
mkdir -p "$BUILD"
echo "$PREFIX" > "$BUILD/.prefix"
export AMENT_PREFIX_PATH="$PREFIX${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
cmake -S "$PKG" -B "$BUILD" -DCMAKE_INSTALL_PREFIX="$PREFIX" -DPython3_EXECUTABLE="$(command -v "$PY")" \
      -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release > "$BUILD.log" 2>&1 \
  || { tail -40 "$BUILD.log" >&2 || true; echo "build_interfaces: cmake configure failed (log: $BUILD.log)" >&2; exit 1; }
cmake --build "$BUILD" -j "${BUILD_JOBS:-2}" >> "$BUILD.log" 2>&1 \
  || { tail -40 "$BUILD.log" >&2 || true; echo "build_interfaces: build failed (log: $BUILD.log)" >&2; exit 1; }
cmake --install "$BUILD" >> "$BUILD.log" 2>&1 \
  || { tail -20 "$BUILD.log" >&2 || true; echo "build_interfaces: install failed" >&2; exit 1; }
(cd / && "$PY" -c 'from distillmatch_msgs.msg import Correspondences') \
  || { echo "build_interfaces: installed, but distillmatch_msgs does not import" >&2; exit 1; }
echo "build_interfaces: distillmatch_msgs installed into $PREFIX (ROS $DISTRO wheels)"
