"""Audio-visual spiking models: registry, neurons, MISNet, S-CMRL and baselines (ROS-free)."""
from .blocks import calibrate_batchnorm
from .registry import create_model, list_models, register_family

__all__ = ['calibrate_batchnorm', 'create_model', 'list_models', 'register_family']
