"""The real ROS 2 command line for tests: ``ros2 launch``, ``ros2 lifecycle``, ``ros2 node``, ``rosdep``.

The package registries have no ROS 2 command line or launch system; ``../shared/ros2-tooling`` holds
them, built unchanged from upstream (its README). :func:`ros2_tooling` installs them into the venv the
tests run in, once per session (seconds when already there), so CI runs the README's robot commands
for real. The product never needs that folder: on a robot these come from the ROS installation.

Set ``AV_SNN_ROS2_TOOLING`` to use another copy of the folder.
"""
from __future__ import annotations

import importlib.util
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TOOLING = Path(os.environ.get('AV_SNN_ROS2_TOOLING', REPO.parent / 'shared' / 'ros2-tooling'))
VENV = Path(sys.prefix)
#: modules install.sh provides (the tooling itself and the optional interface packages)
TOOLING_MODULES = ('launch_ros', 'ros2launch', 'ros2lifecycle', 'ros2node', 'rosdep2', 'vision_msgs',
                   'hri_msgs', 'audio_common_msgs')
INSTALL_TIMEOUT_S = 1200
CLI_TIMEOUT_S = 60


def tooling_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in TOOLING_MODULES)


def _install(rosdep_home: Path) -> dict[str, str]:
    """Run the tooling's install.sh for this venv; the environment that ``ros2`` and ``rosdep`` need."""
    install = TOOLING / 'install.sh'
    if not install.is_file():
        pytest.skip(f'ROS 2 tooling not found at {TOOLING} (set AV_SNN_ROS2_TOOLING)')
    if not tooling_installed() and VENV.resolve() != (REPO / '.venv').resolve():
        # never install into a venv that is not this checkout's own (it may be shared)
        pytest.skip(f'ROS 2 tooling is not installed in {VENV}, which is not this checkout\'s .venv: '
                    f'run {install} {VENV}')
    res = subprocess.run(['bash', str(install), str(VENV), str(rosdep_home)], capture_output=True, text=True,
                         timeout=INSTALL_TIMEOUT_S)
    assert res.returncode == 0, f'{install} failed:\n{res.stdout[-3000:]}{res.stderr[-3000:]}'
    exports = subprocess.run(['bash', str(install), '--rosdep-env', str(rosdep_home)], capture_output=True,
                             text=True, check=True).stdout
    env = dict(os.environ)
    for word in shlex.split(exports.replace('\n', ' ')):
        if '=' in word:
            key, value = word.split('=', 1)
            env[key] = value
    env.update(VIRTUAL_ENV=str(VENV), AMENT_PREFIX_PATH=str(VENV), PATH=f'{VENV / "bin"}{os.pathsep}{env["PATH"]}',
               PYTHONUNBUFFERED='1')
    env.pop('RMW_IMPLEMENTATION', None)
    return env


def assert_install_is_current() -> None:
    """The launch and config files ``ros2 launch`` reads from the install equal this checkout's."""
    share = VENV / 'share' / 'av_snn_ros'
    stale = [str(p.relative_to(REPO)) for p in (*REPO.glob('launch/*.launch.py'), *REPO.glob('config/*.yaml'))
             if not (share / p.parent.name / p.name).is_file()
             or (share / p.parent.name / p.name).read_bytes() != p.read_bytes()]
    if stale:
        pytest.fail(f'{share} is older than this checkout ({", ".join(stale)}): run scripts/install.sh')


_ENV: dict[str, str] | None = None


@pytest.fixture(scope='session')
def ros2_tooling(tmp_path_factory) -> dict[str, str]:
    """Environment for ``ros2`` / ``rosdep`` subprocesses, with the tooling installed in this venv."""
    global _ENV
    # each test module imports this fixture, which makes it one fixture per module: install once anyway
    if _ENV is None:
        _ENV = _install(tmp_path_factory.mktemp('rosdep'))
    return dict(_ENV)


def ros2(env: dict[str, str], *args: str, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run ``ros2 ARGS`` (the real CLI) and return the finished process (text output)."""
    return subprocess.run(['ros2', *args], env=env, capture_output=True, text=True, timeout=timeout)


def lifecycle_state(env: dict[str, str], node: str) -> str | None:
    """``ros2 lifecycle get NODE``'s state label, or None while the node is not discovered."""
    res = ros2(env, 'lifecycle', 'get', node, '--no-daemon', '--spin-time', '1')
    words = res.stdout.split()
    return words[0] if res.returncode == 0 and words else None


def wait_for_state(env: dict[str, str], node: str, state: str, timeout: float = 90.0, launch=None) -> None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = lifecycle_state(env, node)
        if seen == state:
            return
        if launch is not None and launch.proc.poll() is not None:
            raise AssertionError(f'launch ended (rc {launch.proc.returncode}) before {node} became {state}:\n'
                                 f'{launch.output()[-3000:]}')
    raise AssertionError(f'{node} did not become {state} in {timeout} s (last: {seen})')


def set_state(env: dict[str, str], node: str, transition: str, attempts: int = 5) -> None:
    """``ros2 lifecycle set NODE TRANSITION``, retried while discovery misses the node."""
    for _ in range(attempts):
        res = ros2(env, 'lifecycle', 'set', node, transition, '--no-daemon', '--spin-time', '1')
        if 'Transitioning successful' in res.stdout:
            return
    raise AssertionError(f'ros2 lifecycle set {node} {transition} failed: {res.stdout}{res.stderr}')


class Launch:
    """``ros2 launch av_snn_ros FILE ARGS`` in its own process group, output in a log file."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.log = log
        with open(log, 'wb') as out:
            self.proc = subprocess.Popen(['ros2', 'launch', 'av_snn_ros', *args], env=env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors='replace')

    def wait(self, timeout: float) -> int:
        """Wait for launch to end by itself; its exit code."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f'launch did not end within {timeout} s:\n{self.output()[-3000:]}') from None

    def stop(self) -> int | None:
        """Ctrl-C (launch forwards it to its processes); kill the group if that does not end it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def __enter__(self) -> 'Launch':
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
