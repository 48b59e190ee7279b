"""package.xml declares what the code imports: rosdep installs exactly that on a robot.

Every third-party module imported anywhere in the installed code (av_snn_ros, av_snn_training, the
launch files) must map to an ``exec_depend`` key; what only the tests import, to a ``test_depend`` (or
``exec_depend``) key. Modules without any rosdep key must be named in package.xml's comment, which the
README's pip line covers. That every declared key resolves is checked with the real rosdep in
tests/test_ros_tooling.py (the README's rosdep line).
"""
from __future__ import annotations

import ast
import configparser
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNTIME_SOURCES = ('av_snn_ros', 'training', 'launch')
TEST_SOURCES = ('tests',)
#: import name -> rosdep key, for modules whose key is not the module name (rosdistro rosdep/*.yaml)
ROSDEP_KEYS = {
    'numpy': 'python3-numpy', 'scipy': 'python3-scipy', 'cv2': 'python3-opencv', 'yaml': 'python3-yaml',
    'tqdm': 'python3-tqdm', 'matplotlib': 'python3-matplotlib', 'psutil': 'python3-psutil',
    'torch': 'python3-torch', 'onnxruntime': 'python3-onnxruntime-pip',
    'sounddevice': 'python3-sounddevice-pip', 'rosbags': 'python3-rosbags-pip', 'pytest': 'python3-pytest',
}
#: ROS packages (their rosdep key is the package name)
ROS_PACKAGES = {'rclpy', 'rcl_interfaces', 'builtin_interfaces', 'std_msgs', 'sensor_msgs', 'diagnostic_msgs',
                'lifecycle_msgs', 'av_snn_msgs', 'launch', 'launch_ros', 'ament_index_python', 'vision_msgs',
                'audio_common_msgs', 'hri_msgs', 'rosgraph_msgs'}
#: imports with no rosdep key on any distro; package.xml's comment must name each
NO_KEY = {'spikingjelly', 'onnx', 'tensorrt', 'hri_msgs'}
#: this repository's own modules
LOCAL = {'av_snn_ros', 'av_snn_training'} | {p.stem for p in Path(__file__).parent.glob('*.py')}


def imported_modules(*roots: str) -> dict[str, set[str]]:
    """Top-level third-party module -> files importing it, under ``roots`` (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for root in roots:
        for path in (REPO / root).rglob('*.py'):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split('.')[0]
                    if top not in sys.stdlib_module_names and top not in LOCAL:
                        found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def declared() -> dict[str, set[str]]:
    root = ET.parse(REPO / 'package.xml').getroot()
    deps: dict[str, set[str]] = {}
    for tag in ('depend', 'exec_depend', 'test_depend', 'build_depend'):
        deps[tag] = {e.text.strip() for e in root.findall(tag)}
    deps['exec'] = deps['depend'] | deps['exec_depend']
    deps['test'] = deps['exec'] | deps['test_depend']
    return deps


def comments_of(xml_text: str) -> list[str]:
    return [part.split('-->')[0] for part in xml_text.split('<!--')[1:]]


def key_of(module: str) -> str | None:
    if module in NO_KEY:
        return None
    if module in ROSDEP_KEYS:
        return ROSDEP_KEYS[module]
    assert module in ROS_PACKAGES, (f'{module} is imported but has no known rosdep key: add it to ROSDEP_KEYS '
                                    f'(or NO_KEY) here and to package.xml')
    return module


def test_runtime_imports_are_exec_depends():
    deps = declared()
    missing = {m: sorted(files)[:3] for m, files in imported_modules(*RUNTIME_SOURCES).items()
               if key_of(m) is not None and key_of(m) not in deps['exec']}
    assert not missing, f'imported at run time but not an exec_depend of package.xml: {missing}'


def test_test_imports_and_plugins_are_test_depends():
    deps = declared()
    missing = {m: sorted(files)[:3] for m, files in imported_modules(*TEST_SOURCES).items()
               if key_of(m) is not None and key_of(m) not in deps['test']}
    assert not missing, f'imported by the tests but not a test_depend: {missing}'
    ini = configparser.ConfigParser()
    ini.read(REPO / 'pytest.ini')
    if 'timeout' in ini['pytest']:               # the option exists only with the pytest-timeout plugin
        assert 'python3-pytest-timeout' in deps['test']


def test_modules_without_a_key_are_named_for_pip():
    text = (REPO / 'package.xml').read_text()
    comments = ' '.join(comments_of(text))
    imported = set(imported_modules(*RUNTIME_SOURCES, *TEST_SOURCES))
    unnamed = sorted(m for m in NO_KEY & imported if m not in comments)
    assert not unnamed, f'package.xml does not say how to install {unnamed} (no rosdep key)'
    # and the comment does not claim "no key" for a module that has one (it once listed torch & co.)
    (no_key_comment,) = [c for c in comments_of(text) if 'No rosdep key' in c]
    wrongly = sorted(m for m in ROSDEP_KEYS if re.search(rf'\b{m}\b', no_key_comment))
    assert not wrongly, f'package.xml says {wrongly} have no rosdep key, but they do: {[ROSDEP_KEYS[m] for m in wrongly]}'
