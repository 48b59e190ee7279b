"""Audio-visual spiking models: registry, neurons, MISNet, S-CMRL and baselines (ROS-free)."""
from .blocks import calibrate_batchnorm
from .registry import create_model, list_families, list_models, register_family

# Importing a family module registers its builders (@register_family); this package file runs before any
# av_snn_ros.models.* module, so every caller of the registry sees the built-in families.
from . import baselines, cnn, misnet, scmrl  # noqa: E402,F401  isort:skip

__all__ = ['calibrate_batchnorm', 'create_model', 'list_families', 'list_models', 'register_family']
