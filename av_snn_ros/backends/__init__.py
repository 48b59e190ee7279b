"""Inference backends (torch, onnxruntime, tensorrt) behind one interface; see :mod:`.base`."""
from .base import (BackendUnavailable, InferenceBackend, InferenceResult, available_backends,
                   create_backend)

__all__ = ['BackendUnavailable', 'InferenceBackend', 'InferenceResult', 'available_backends',
           'create_backend']
