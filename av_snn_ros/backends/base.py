"""The inference backend interface, the backend registry and the ``auto`` / fallback policy.

Every backend takes one window in the project's input contract (time first, batch second:
audio ``(T, B, 1, Ha, Wa)``, visual ``(T, B, C, Hv, Wv)``, float32) and returns time-averaged logits.
Heavy libraries (onnxruntime, tensorrt) are imported inside the factories, so installing or importing
this package never needs them.
"""
from __future__ import annotations

import abc
import dataclasses
import importlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..contract import as_outputs, input_shapes
from ..model_card import ModelFileError
from ..timing import time_interleaved

log = logging.getLogger(__name__)


class BackendUnavailable(RuntimeError):
    """The backend's library, device or model file is missing, or building/loading it failed."""


@dataclass
class InferenceResult:
    """Outputs of one forward pass: logits ``(B, K)`` fused, and per modality (``None`` if absent)."""

    logits: np.ndarray
    audio_logits: np.ndarray | None = None
    visual_logits: np.ndarray | None = None

    def outputs(self) -> dict[str, np.ndarray]:
        """Every contract output by name; a head the model does not have is zeros (as in the graph)."""
        return as_outputs(self.logits, {'audio_logits': self.audio_logits, 'visual_logits': self.visual_logits})


class InferenceBackend(abc.ABC):
    """One loaded model on one runtime. Subclasses set ``name`` and implement :meth:`infer`."""

    name: str = 'abstract'

    def __init__(self) -> None:
        #: free-form facts for diagnostics (device, precision, engine path, fallback reason, ...)
        self.info: dict[str, Any] = {}

    @abc.abstractmethod
    def infer(self, audio: np.ndarray, visual: np.ndarray) -> InferenceResult:
        """Run one batch of windows; inputs must match the model card's static shapes."""

    def warmup(self, audio: np.ndarray, visual: np.ndarray, iterations: int = 2) -> None:
        """Run a few passes so lazy initialisation (allocations, kernel selection) is paid before start."""
        for _ in range(iterations):
            self.infer(audio, visual)

    def close(self) -> None:
        """Release the backend's resources (GPU memory, sessions)."""


#: name -> module of a backend. The module defines ``Options`` (a frozen dataclass: the backend's options,
#: with ``from_options(mapping)`` validating them) and ``create(card, options) -> InferenceBackend``;
#: it imports its heavy library only inside ``create``.
_BACKEND_MODULES: dict[str, str] = {
    'torch': 'av_snn_ros.backends.torch_backend',
    'onnxruntime': 'av_snn_ros.backends.onnxruntime_backend',
    'tensorrt': 'av_snn_ros.backends.tensorrt_backend',
}
#: the order ``auto`` tries backends in: fastest first where it can run.
AUTO_ORDER = ('tensorrt', 'onnxruntime', 'torch')
#: windows each candidate runs when ``auto`` measures onnxruntime (CPU) against torch on a GPU
AUTO_TIMING_WINDOWS = 10
#: device nodes of a GPU driver CUDA can sit on (Linux desktop/server, Jetson, WSL2): checked before
#: importing torch to ask CUDA, so CPU-only machines never pay torch's import
_NVIDIA_DEVICE_NODES = ('/dev/nvidiactl', '/dev/nvhost-ctrl-gpu', '/dev/nvgpu/igpu0/ctrl', '/dev/dxg')


def available_backends() -> list[str]:
    """Backend names accepted by :func:`create_backend` (``auto`` included)."""
    return ['auto', *_BACKEND_MODULES]


def _module(name: str):
    if name not in _BACKEND_MODULES:
        raise ValueError(f'unknown backend {name!r}; choose one of {", ".join(available_backends())}')
    return importlib.import_module(_BACKEND_MODULES[name])


def options_class(name: str) -> type:
    """The options dataclass of backend ``name``."""
    return _module(name).Options


def option_names() -> dict[str, tuple[str, ...]]:
    """Backend name -> the option names it takes (the fields of its options dataclass)."""
    return {name: tuple(f.name for f in dataclasses.fields(options_class(name))) for name in _BACKEND_MODULES}


def parse_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Every backend's validated options object from one flat mapping (as the node's parameters give).

    Each backend gets the keys it declares; a key no backend declares is a typo and raises
    ``ValueError`` listing the valid names; a bad value raises the backend's own ``ValueError`` /
    ``TypeError`` (a config error, never a reason to fall back).
    """
    names = option_names()
    known = {key for keys in names.values() for key in keys}
    unknown = sorted(set(options) - known)
    if unknown:
        valid = '; '.join(f'{name}: {", ".join(keys)}' for name, keys in names.items())
        raise ValueError(f'unknown backend option(s) {", ".join(unknown)}; valid options are {valid}')
    return {name: options_class(name).from_options({k: v for k, v in options.items() if k in keys})
            for name, keys in names.items()}


#: the most CPU threads a backend option accepts (a descriptor range for the node's parameter)
MAX_THREADS = 256


def option(default: Any, help: str, *, unset: Any = None, range: tuple[float, float] | None = None,
           choices: tuple[str, ...] | None = None, parameter: bool = True) -> Any:
    """A backend option field: its default plus what the node's parameter descriptor needs.

    ``unset``: the parameter value that means "not set" where the option's default is None (ROS
    parameters cannot be None: ``0`` threads, ``''`` paths). ``parameter=False`` keeps an option out of
    the node's parameters (library-only).
    """
    return dataclasses.field(default=default, metadata={'help': help, 'unset': unset, 'range': range,
                                                        'choices': choices, 'parameter': parameter})


@dataclass(frozen=True)
class BackendParameter:
    """One backend option as a node parameter (``backend.<name>``), derived from the options dataclasses."""

    name: str
    default: Any            # the parameter's default: the option's, or ``unset`` when that is None
    unset: Any              # the parameter value that leaves the option unset (None: every value is set)
    description: str
    range: tuple[float, float] | None
    choices: tuple[str, ...] | None
    backends: tuple[str, ...]


def backend_parameters() -> tuple[BackendParameter, ...]:
    """Every backend option exposed as a node parameter, in backend order; an option several backends
    share (``threads``) appears once, with the first backend's description and the list of backends."""
    found: dict[str, BackendParameter] = {}
    for backend in _BACKEND_MODULES:
        for f in dataclasses.fields(options_class(backend)):
            meta = f.metadata
            if not meta.get('parameter', False):
                continue
            if f.name in found:
                found[f.name] = dataclasses.replace(found[f.name], backends=found[f.name].backends + (backend,))
                continue
            default = meta['unset'] if f.default is None else f.default
            found[f.name] = BackendParameter(f.name, default, meta['unset'], meta['help'], meta['range'],
                                             meta['choices'], (backend,))
    return tuple(found.values())


def options_from_parameters(values: Mapping[str, Any]) -> dict[str, Any]:
    """Backend options from node parameter values (``name`` without the ``backend.`` prefix); a value
    equal to its parameter's ``unset`` is left out, so the backend uses its own default."""
    return {p.name: values[p.name] for p in backend_parameters()
            if p.name in values and (p.unset is None or values[p.name] != p.unset)}


def options_from_mapping(cls: type, values: Mapping[str, Any]) -> Any:
    """Strictly build options dataclass ``cls`` (unknown key or wrong type: ``ValueError``); None = unset."""
    from ..config import from_dict
    return from_dict(cls, {k: v for k, v in values.items() if v is not None})


def check_threads(threads: int | None) -> None:
    """``ValueError`` unless ``threads`` is None (the library's default) or >= 1."""
    if threads is not None and threads < 1:
        raise ValueError(f'threads must be >= 1, got {threads}')


def _create(name: str, card, options: Any) -> InferenceBackend:
    return _module(name).create(card, options)


@dataclass
class BackendChoice:
    """What :func:`create_backend` decided, for logs and diagnostics."""

    requested: str
    backend: InferenceBackend
    skipped: dict[str, str] = field(default_factory=dict)   # backend name -> why it was not used


def create_backend(name: str, card, **options) -> BackendChoice:
    """Create backend ``name`` for model card ``card``.

    ``auto`` tries :data:`AUTO_ORDER` and falls back past any backend that is unavailable or fails to
    build/load, recording why in ``BackendChoice.skipped`` (the node logs it once and publishes it in
    diagnostics). A pinned name never falls back: its failure raises :class:`BackendUnavailable`.
    A :class:`~av_snn_ros.model_card.ModelFileError` (a file the card lists is missing, truncated or does
    not match its hash) is never fallen back past, not even under ``auto``: a damaged deployment must
    stop the start-up, not run quietly on another backend.
    ``options`` is one flat mapping for all backends (see :func:`parse_options`): each backend gets the
    options it declares, and a name no backend declares raises ``ValueError`` listing the valid ones.
    """
    if name not in available_backends():
        raise ValueError(f'unknown backend {name!r}; choose one of {", ".join(available_backends())}')
    parsed = parse_options(options)
    if name != 'auto':
        return BackendChoice(requested=name, backend=_create(name, card, parsed[name]))
    skipped: dict[str, str] = {}
    for candidate in AUTO_ORDER:
        try:
            backend = _create(candidate, card, parsed[candidate])
        except ModelFileError:
            raise
        except (BackendUnavailable, ImportError, OSError, RuntimeError) as exc:
            skipped[candidate] = str(exc)
            continue
        if candidate == 'onnxruntime':
            backend = _faster_of_cpu_and_gpu(backend, card, parsed['torch'], skipped)
        backend.info.setdefault('fallback_from', dict(skipped))
        if skipped:
            # The node logs each skip through ROS logging; this line serves library users.
            log.info('backend auto -> %s (skipped %s)', candidate,
                        '; '.join(f'{k}: {v}' for k, v in skipped.items()))
        return BackendChoice(requested='auto', backend=backend, skipped=skipped)
    raise BackendUnavailable('no inference backend could be created: ' +
                             '; '.join(f'{k}: {v}' for k, v in skipped.items()))


def torch_cuda_available() -> bool:
    """Whether torch sees a CUDA device; torch is imported only where an NVIDIA driver is present."""
    if not any(os.path.exists(node) for node in _NVIDIA_DEVICE_NODES):
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _faster_of_cpu_and_gpu(ort_backend: InferenceBackend, card, torch_options: Any,
                           skipped: dict[str, str]) -> InferenceBackend:
    """Without TensorRT but with a GPU, keep whichever of onnxruntime (CPU) and torch (CUDA) is faster here.

    Neither wins everywhere: on an H200 host the shipped tiny model ran 3.1-3.4 ms on onnxruntime (2 CPU
    threads) and 7.0-7.3 ms on torch/CUDA launched eagerly, 1.8 ms replayed from a CUDA graph; a small
    laptop or Jetson GPU against a fast CPU can go either way, and the model's size moves it too. So
    ``auto`` times both on this machine, once, at start-up, and records the numbers.
    """
    if torch_options.device == 'cpu' or not torch_cuda_available():
        return ort_backend
    try:
        gpu_backend = _create('torch', card, dataclasses.replace(torch_options, device='cuda', native_kernels=False))
    except (BackendUnavailable, ImportError, OSError, RuntimeError) as exc:
        skipped['torch (cuda)'] = str(exc)
        return ort_backend
    candidates = {'onnxruntime': ort_backend, 'torch (cuda)': gpu_backend}
    timing = time_backends(candidates, card.preprocessing)
    kept = min(timing, key=timing.get)            # a tie keeps onnxruntime (listed first)
    dropped = next(name for name in candidates if name != kept)
    skipped[dropped] = (f'slower on this machine: {timing[dropped]:.2f} ms vs {timing[kept]:.2f} ms '
                        f'per window (median of {AUTO_TIMING_WINDOWS})')
    candidates[dropped].close()
    candidates[kept].info['auto_timing_ms'] = {k: round(v, 3) for k, v in timing.items()}
    log.info('backend auto: onnxruntime %.2f ms vs torch (cuda) %.2f ms per window -> %s',
             timing['onnxruntime'], timing['torch (cuda)'], kept)
    return candidates[kept]


def time_backends(backends: dict[str, InferenceBackend], pre_cfg, windows: int = AUTO_TIMING_WINDOWS
                  ) -> dict[str, float]:
    """Median milliseconds per window of each backend on one zero window, interleaved after a warm-up.

    Zeros cost what real windows cost: every kernel here is dense, whatever the spikes.
    """
    a_shape, v_shape = input_shapes(pre_cfg, 1)
    audio, visual = np.zeros(a_shape, np.float32), np.zeros(v_shape, np.float32)
    stats = time_interleaved({name: (lambda b=backend: b.infer(audio, visual)) for name, backend in backends.items()},
                             warmup=2, min_rounds=windows, max_rounds=windows, min_time_s=0.0)
    return {name: s.p50_ms for name, s in stats.items()}
