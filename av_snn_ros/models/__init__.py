"""Audio-visual spiking models: registry, neurons, MISNet, S-CMRL and baselines (ROS-free)."""
from .registry import create_model, list_models, register_family

__all__ = ['create_model', 'list_models', 'register_family']
