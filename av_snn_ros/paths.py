"""Where the package's shipped files (model cards, configs, demo bag) live, installed or in a checkout."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_NAME = 'av_snn_ros'
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def share_dir() -> Path:
    """Return the package's share directory.

    A source checkout (``setup.py`` beside this package) wins over the ament index, so edits in a
    checkout are seen without re-installing; an installed package resolves through the ament index
    (``AMENT_PREFIX_PATH``) or, failing that, ``<sys.prefix>/share/av_snn_ros``.
    """
    if (_SOURCE_ROOT / 'setup.py').is_file() and (_SOURCE_ROOT / 'models').is_dir():
        return _SOURCE_ROOT
    for prefix in filter(None, os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep)):
        candidate = Path(prefix) / 'share' / PACKAGE_NAME
        if (candidate / 'package.xml').is_file():
            return candidate
    import sys
    candidate = Path(sys.prefix) / 'share' / PACKAGE_NAME
    if candidate.is_dir():
        return candidate
    raise FileNotFoundError(
        f'cannot find the {PACKAGE_NAME} share directory: install the package (scripts/install.sh) '
        'or set AMENT_PREFIX_PATH to its install prefix')


def models_dir() -> Path:
    """Folder with model variant YAML files, shipped weights and model cards."""
    return share_dir() / 'models'


def config_dir() -> Path:
    """Folder with the ROS parameter files (robot, replay, demo)."""
    return share_dir() / 'config'


def default_model_card() -> Path:
    """The model card of the shipped default model (the embedded demo's model)."""
    return models_dir() / 'default' / 'card.yaml'


def default_data_root() -> Path | None:
    """``../shared/data`` beside a source checkout, if present (tests and the demo default to it)."""
    env = os.environ.get('AV_SNN_DATA_ROOT')
    if env:
        return Path(env)
    candidate = _SOURCE_ROOT.parent / 'shared' / 'data'
    return candidate if candidate.is_dir() else None
