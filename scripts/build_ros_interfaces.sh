#!/usr/bin/env bash
# Build ROS 2 interface packages (ament_cmake + rosidl) and install them into the active venv.
# usage: build_ros_interfaces.sh [PKG_DIR ...]   (list dependencies first; no argument: only fix paths)
set -euo pipefail
# name the failing step: install.sh keeps only this script's output, which would otherwise be empty
trap 'echo "build_ros_interfaces.sh: line $LINENO failed (exit $?): $BASH_COMMAND" >&2' ERR
: "${VIRTUAL_ENV:?activate the venv first}"
export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
PY="$VIRTUAL_ENV/bin/python"
PYINC=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
NPINC=$("$PY" -c 'import numpy; print(numpy.get_include())')
[ -f "$PYINC/Python.h" ] || { echo "no Python.h in $PYINC (Debian: apt-get install python3-dev)" >&2; exit 1; }
# The *_msgs wheels were built under /opt/python/cp3XX-cp3XX; their exported CMake targets still
# point there, which breaks find_package(std_msgs) for any downstream interface package.
# grep exits 1 when no file holds the baked path any more (a re-run on a fixed venv): not an error.
{ grep -rlZ --include='*Export.cmake' '/opt/python/cp3' "$VIRTUAL_ENV/share" || [ $? -eq 1 ]; } | xargs -0 -r sed -i -E \
  -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#$PYINC#g" \
  -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#$NPINC#g"
for pkg in "$@"; do
  bdir="${ROS_IFACE_BUILD_DIR:-build/ros_interfaces}/$(basename "$pkg")"
  cmake -S "$pkg" -B "$bdir" -DCMAKE_INSTALL_PREFIX="$VIRTUAL_ENV" -DCMAKE_PREFIX_PATH="$VIRTUAL_ENV" \
    -DPython3_EXECUTABLE="$PY" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF
  cmake --build "$bdir" -j"$(nproc)"
  cmake --install "$bdir"
done
