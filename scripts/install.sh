#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv/ at the repo root.
# Idempotent: re-running only installs what changed. Writes nothing outside the repo
# except the OS packages it may need (cmake, g++, portaudio for the live demo).
#
# usage: scripts/install.sh            full install (runtime, training, tests, colcon)
# env:   AV_SNN_TORCH_SPEC   torch requirement (default torch==2.13.0, the CPU build on this machine;
#                            on a Jetson use NVIDIA's JetPack torch wheel instead)
#        AV_SNN_SKIP_APT=1   never call apt-get
#        AV_SNN_SYSTEM_SITE_PACKAGES=1  create the venv with --system-site-packages (Jetson: JetPack's
#                            tensorrt bindings live in the system Python; see docs/jetson.md)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
TORCH_SPEC="${AV_SNN_TORCH_SPEC:-torch==2.13.0}"

log() { printf '[install] %s\n' "$*" >&2; }

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
command -v g++ >/dev/null || need_apt+=(g++)
# Debian's own python3 ships venv/ensurepip and the C headers (needed by the interface build) separately.
python3 -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)
[ -f "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ] || need_apt+=(python3-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "${AV_SNN_SKIP_APT:-0}" = 1 ] || ! command -v apt-get >/dev/null; then
    log "missing build tools: ${need_apt[*]} (install them, then re-run)"; exit 1
  fi
  log "installing OS packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  venv_args=()
  [ "${AV_SNN_SYSTEM_SITE_PACKAGES:-0}" = 1 ] && venv_args+=(--system-site-packages)
  python3 -m venv "${venv_args[@]}" "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
PIP=(python -m pip install -q --disable-pip-version-check)

stamp="$VENV/.av_snn_deps"
deps_hash=$(cat scripts/install.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$deps_hash" ]; then
  log "installing Python dependencies (first run takes a few minutes)"
  "${PIP[@]}" --upgrade pip setuptools wheel
  "${PIP[@]}" "$TORCH_SPEC"
  # spikingjelly's declared deps drag in ~1.3 GB of torchvision/torchaudio it does not need here.
  "${PIP[@]}" --no-deps spikingjelly==2.0.0
  "${PIP[@]}" loguru packaging scipy tqdm matplotlib numpy
  "${PIP[@]}" ros-kilted-rclpy ros-kilted-rmw-fastrtps-cpp ros-kilted-sensor-msgs \
      ros-kilted-std-msgs ros-kilted-diagnostic-msgs ros-kilted-lifecycle-msgs
  "${PIP[@]}" ros-kilted-ament-cmake ros-kilted-ament-package \
      ros-kilted-ament-cmake-include-directories ros-kilted-ament-cmake-ros-core \
      ros-kilted-rosidl-default-generators ros-kilted-rosidl-core-generators catkin-pkg
  "${PIP[@]}" colcon-core colcon-cmake colcon-ros colcon-python-setup-py colcon-package-information
  "${PIP[@]}" rosbags onnx onnxruntime onnxscript polygraphy opencv-python-headless pyyaml \
      psutil sounddevice pytest pytest-timeout
  echo "$deps_hash" > "$stamp"
fi

# The message package: rebuilt when its sources change (also fixes the wheels' baked CMake paths).
msgs_hash=$( (cat av_snn_msgs/CMakeLists.txt av_snn_msgs/package.xml av_snn_msgs/msg/*.msg) | sha256sum | cut -c1-16)
if [ "$(cat "$VENV/.av_snn_msgs" 2>/dev/null)" != "$msgs_hash" ] || ! python -c "import av_snn_msgs.msg" 2>/dev/null; then
  log "building the av_snn_msgs interface package"
  bash scripts/build_ros_interfaces.sh av_snn_msgs >"$VENV/av_snn_msgs_build.log" 2>&1 \
    || { tail -30 "$VENV/av_snn_msgs_build.log" >&2; log "interface build failed (log: $VENV/av_snn_msgs_build.log)"; exit 1; }
  echo "$msgs_hash" > "$VENV/.av_snn_msgs"
fi

log "installing av_snn_ros into the venv"
# Non-editable: an editable install skips data_files, so the ament index would not find the package.
"${PIP[@]}" --no-deps --force-reinstall --no-build-isolation . >/dev/null
# `ros2 launch` / `ros2 run` look for a package's executables in <prefix>/lib/<package>/ (colcon puts
# them there through setup.cfg); pip puts console scripts in bin/ only, so link them.
libexec="$VENV/lib/av_snn_ros"
rm -rf "$libexec" && mkdir -p "$libexec"
for exe in $(python -c "from importlib.metadata import distribution
print(' '.join(sorted({e.name for e in distribution('av_snn_ros').entry_points if e.group == 'console_scripts'})))"); do
  [ -x "$VENV/bin/$exe" ] || { log "console script $exe missing from $VENV/bin"; exit 1; }
  ln -s "../../bin/$exe" "$libexec/$exe"
done
log "done: . .venv/bin/activate"
