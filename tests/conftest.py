"""Test isolation for ROS (localhost-only discovery, a random domain per run, logs in a temp dir) and the
suite's prerequisites: the real data and the shipped model must be present and intact, or the run fails
(see ``tests/prerequisites.py``; ``AV_SNN_ALLOW_MISSING_DATA=1`` turns that into skips)."""
import os
import random
import sys
import tempfile
from pathlib import Path

os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')   # no multicast on real NICs
os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 100)))   # parallel runs on one host
os.environ.setdefault('ROS_LOG_DIR', tempfile.mkdtemp(prefix='roslog-'))
os.environ.setdefault('AMENT_PREFIX_PATH', sys.prefix)
os.environ.pop('RMW_IMPLEMENTATION', None)                           # only Fast DDS is shipped

import pytest  # noqa: E402

import prerequisites  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_report_header(config) -> list[str]:
    """Say up front which data and model this run tests (and whether they are usable)."""
    return [f'{kind}: {value} ({"OK" if problem is None else problem})'
            for kind, (value, problem) in prerequisites.status().items()]


def pytest_sessionfinish(session, exitstatus) -> None:
    """A run without its prerequisites fails, even when every selected test happened not to need them."""
    if prerequisites.problems() and not prerequisites.missing_allowed() and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    found = prerequisites.problems()
    if not found:
        return
    if prerequisites.missing_allowed():
        terminalreporter.write_sep('=', f'{prerequisites.ALLOW_MISSING_ENV}=1: tests needing these were SKIPPED',
                                   yellow=True)
    else:
        terminalreporter.write_sep('=', 'test prerequisites missing: this run FAILS', red=True)
    for line in found:
        terminalreporter.write_line(line)


@pytest.fixture(scope='session')
def data_root() -> Path:
    """The real data (``../shared/data`` or ``AV_SNN_DATA_ROOT``); missing or corrupt data fails the test
    (skips it only with ``AV_SNN_ALLOW_MISSING_DATA=1``)."""
    return prerequisites.require('data')


@pytest.fixture(scope='session')
def shipped_card() -> Path:
    """The shipped default model's ``card.yaml``, verified (weights and ONNX hashes); fails like ``data_root``."""
    return prerequisites.require('model')


@pytest.fixture
def ros_context():
    """A fresh rclpy context per test (pass ``context=`` to nodes and executors)."""
    import rclpy
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.shutdown(context=ctx)
