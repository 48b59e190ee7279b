"""Test isolation for ROS: localhost-only discovery, a random domain per run, logs in a temp dir."""
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

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope='session')
def data_root() -> Path:
    """The real data (``../shared/data``); tests that need it skip with a clear reason when absent."""
    from av_snn_ros.paths import default_data_root
    root = default_data_root()
    if root is None or not (root / 'fsdd' / 'recordings').is_dir() or not (root / 'mnist' / 'mnist.npz').is_file():
        pytest.skip('real data not found: set AV_SNN_DATA_ROOT or place it at ../shared/data')
    return root


@pytest.fixture
def ros_context():
    """A fresh rclpy context per test (pass ``context=`` to nodes and executors)."""
    import rclpy
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.shutdown(context=ctx)
