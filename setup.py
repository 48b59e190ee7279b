"""ament_python setup for av_snn_ros (runtime) and av_snn_training (offline training)."""
from glob import glob
import os

from setuptools import find_packages, setup

package_name = 'av_snn_ros'


def _files(pattern: str) -> list[str]:
    return sorted(p for p in glob(pattern, recursive=True) if os.path.isfile(p))


def _tree(src_dir: str, dest_root: str) -> list[tuple[str, list[str]]]:
    """data_files entries that mirror ``src_dir`` below ``dest_root``, one entry per folder."""
    entries = {}
    for path in _files(os.path.join(src_dir, '**', '*')):
        if '__pycache__' in path:
            continue
        rel_dir = os.path.relpath(os.path.dirname(path), src_dir)
        dest = dest_root if rel_dir == '.' else os.path.join(dest_root, rel_dir)
        entries.setdefault(dest, []).append(path)
    return sorted(entries.items())


setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(include=['av_snn_ros', 'av_snn_ros.*'])
    + find_packages('training', include=['av_snn_training', 'av_snn_training.*']),
    package_dir={'av_snn_training': 'training/av_snn_training'},
    # the native kernels' C source, compiled on first use (av_snn_ros/models/native_kernels.py), and the
    # bench's reference timings keyed by CPU (av_snn_ros/tools/cpu_identity.py)
    package_data={'av_snn_ros.models': ['spiking_kernels.c'], 'av_snn_ros.tools': ['reference_timings.yaml']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', _files('launch/*.launch.py')),
        ('share/' + package_name + '/config', _files('config/*.yaml')),
        *_tree('models', 'share/' + package_name + '/models'),
        *_tree('data', 'share/' + package_name + '/data'),
    ],
    install_requires=['setuptools'],
    zip_safe=False,      # native_kernels.py reads its C source next to it
    maintainer='av_snn_ros maintainers',
    maintainer_email='maintainers@av-snn-ros.invalid',
    description='Audio-visual spiking neural network perception for ROS 2.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'av-snn = av_snn_ros.cli:main',
            'av_classifier_node = av_snn_ros.ros.classifier_node:main',
            'microphone_node = av_snn_ros.ros.microphone_node:main',
            'camera_node = av_snn_ros.ros.camera_node:main',
            'audio_common_adapter = av_snn_ros.ros.audio_common_adapter:main',
        ],
    },
)
