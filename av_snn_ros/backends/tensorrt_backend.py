"""TensorRT backend: build (or reuse) a static engine from the model card's ONNX and run windows on it.

Targets the TensorRT 8.6 (JetPack 6.0) and 10.x (JetPack 6.1+) Python APIs. Both have the name-based
I/O API used here (``num_io_tensors``, ``get_tensor_name``, ``set_tensor_address``,
``execute_async_v3``); they differ only in network creation (8.x needs the EXPLICIT_BATCH flag, 10.x
ignores it). TensorRT and torch's CUDA runtime are imported inside functions, so importing this module
needs neither; every failure to import, find a GPU, parse, build or load raises
:class:`~av_snn_ros.backends.base.BackendUnavailable` with the reason, which ``create_backend('auto')``
records before falling back.

Device buffers are torch CUDA tensors (``tensor.data_ptr()``) and the work runs on a torch CUDA stream
owned by the backend: no pycuda. On Jetson this means NVIDIA's CUDA-enabled torch wheel for the
installed JetPack (docs/jetson.md).

Options (names follow Isaac ROS ``isaac_ros_tensor_rt``):

- ``model_file_path``: ONNX file (default: the card's verified ONNX).
- ``engine_file_path``: explicit engine file; built there if missing or stale. Default: the engine cache
  (:mod:`~av_snn_ros.backends.engine_cache`, ``$AV_SNN_ENGINE_CACHE``).
- ``force_engine_update``: rebuild even when a valid engine exists.
- ``enable_fp16`` (default True), ``max_workspace_size`` (bytes), ``dla_core`` (-1 = GPU).
- ``engine_cache_dir``: cache folder override; ``warmup_iterations`` (default 2).
"""
from __future__ import annotations

import collections
import contextlib
import logging
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..contract import INPUT_NAMES, OUTPUT_NAMES, input_shapes, real_outputs
from . import engine_cache
from .base import BackendUnavailable, InferenceBackend, InferenceResult, option
from .engine_cache import GPU_ONLY, CacheResult, EngineCache, EngineKey

log = logging.getLogger(__name__)

#: builder workspace cap (a limit, not an allocation): Isaac ROS's default, ample for the small window
#: models here and small enough for an 8 GB Jetson that shares its memory between CPU and GPU. One value
#: for the node and ``av-snn export --engine``: the workspace is part of the engine cache key.
DEFAULT_WORKSPACE_BYTES = 64 << 20
DEFAULT_WARMUP_ITERATIONS = 2
#: kept TensorRT error messages, appended to exceptions so a failure names its cause
_MAX_LOGGED_ERRORS = 20
#: first TensorRT major version where networks are always explicit-batch
_TRT_ALWAYS_EXPLICIT_BATCH_MAJOR = 10


# --------------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------------

def _opt_path(name: str, value: Any) -> Path | None:
    if value is None or value == '':       # ROS string parameters use '' for "unset"
        return None
    if not isinstance(value, (str, Path)):
        raise TypeError(f'{name} must be a path string, got {type(value).__name__}')
    return Path(value).expanduser()


def _opt_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f'{name} must be a bool, got {value!r}')
    return bool(value)


def _opt_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f'{name} must be an int, got {value!r}')
    if value < minimum:
        raise ValueError(f'{name} must be >= {minimum}, got {value}')
    return int(value)


@dataclass(frozen=True)
class TensorRTOptions:
    """Validated TensorRT backend options (see the module docstring)."""

    model_file_path: Path | None = option(None, "TensorRT: ONNX file to build the engine from (empty: the "
                                          "card's ONNX).", unset='')
    engine_file_path: Path | None = option(None, 'TensorRT: engine file to load or write (empty: the '
                                           'content-addressed engine cache).', unset='')
    force_engine_update: bool = option(False, 'TensorRT: rebuild the engine even if a valid one is cached.')
    enable_fp16: bool = option(True, 'TensorRT: allow FP16 kernels.')
    max_workspace_size: int = option(DEFAULT_WORKSPACE_BYTES, 'TensorRT: builder workspace limit in bytes.',
                                     range=(1 << 20, 1 << 40))
    dla_core: int = option(GPU_ONLY, 'TensorRT: DLA core to run on (-1: GPU).', range=(GPU_ONLY, 7))
    engine_cache_dir: Path | None = option(None, 'engine cache folder override', parameter=False)
    warmup_iterations: int = option(DEFAULT_WARMUP_ITERATIONS, 'warm-up passes before use', parameter=False)

    @property
    def precision(self) -> str:
        return 'fp16' if self.enable_fp16 else 'fp32'

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> 'TensorRTOptions':
        """Validated options; ROS's ``''`` and None mean "unset"; an unknown key raises ``ValueError``."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValueError(f'unknown TensorRT option(s) {", ".join(unknown)}; valid: {", ".join(valid)}')

        def get(key: str, default: Any = None) -> Any:
            value = options.get(key)
            return default if value is None else value

        opts = cls(
            model_file_path=_opt_path('model_file_path', get('model_file_path')),
            engine_file_path=_opt_path('engine_file_path', get('engine_file_path')),
            force_engine_update=_opt_bool('force_engine_update', get('force_engine_update', False)),
            enable_fp16=_opt_bool('enable_fp16', get('enable_fp16', True)),
            max_workspace_size=_opt_int('max_workspace_size', get('max_workspace_size', DEFAULT_WORKSPACE_BYTES), 1),
            dla_core=_opt_int('dla_core', get('dla_core', GPU_ONLY), GPU_ONLY),
            engine_cache_dir=_opt_path('engine_cache_dir', get('engine_cache_dir')),
            warmup_iterations=_opt_int('warmup_iterations', get('warmup_iterations', DEFAULT_WARMUP_ITERATIONS), 0),
        )
        if opts.dla_core != GPU_ONLY and not opts.enable_fp16:
            raise ValueError('DLA runs FP16/INT8 layers only: set enable_fp16=true, or dla_core=-1 for the GPU')
        return opts


# --------------------------------------------------------------------------------------------------
# environment: TensorRT, CUDA device
# --------------------------------------------------------------------------------------------------

def import_tensorrt():
    """``import tensorrt``, or BackendUnavailable saying how to get it."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as exc:   # OSError: bindings present but libnvinfer missing
        raise BackendUnavailable(
            f'TensorRT is not available ({exc}); on Jetson it comes with JetPack (python3-libnvinfer, '
            'visible to the venv via --system-site-packages), elsewhere `pip install tensorrt`') from exc
    return trt


def trt_major(trt) -> int:
    return int(str(trt.__version__).split('.')[0])


@dataclass(frozen=True)
class CudaDevice:
    index: int
    name: str
    compute_capability: str          # "major.minor"
    total_memory_bytes: int


def cuda_device() -> CudaDevice:
    """The current CUDA device as torch sees it, or BackendUnavailable with the reason."""
    try:
        import torch
    except ImportError as exc:
        raise BackendUnavailable(f'torch is needed for the TensorRT backend\'s CUDA buffers: {exc}') from exc
    if not torch.cuda.is_available():
        raise BackendUnavailable(
            f'no CUDA device: torch {torch.__version__} (CUDA {torch.version.cuda or "not compiled in"}) '
            'reports torch.cuda.is_available() == False')
    index = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return CudaDevice(index=index, name=str(props.name), compute_capability=f'{props.major}.{props.minor}',
                      total_memory_bytes=int(props.total_memory))


_LOGGER = None


def _trt_logger(trt):
    """One process-wide TensorRT logger (TensorRT warns when builders/runtimes get different ones).

    It forwards to Python logging (TensorRT INFO -> DEBUG: it is chatty) and keeps the recent errors
    so exceptions can quote them.
    """
    global _LOGGER
    if _LOGGER is not None:
        return _LOGGER
    severity = trt.ILogger.Severity

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: collections.deque[str] = collections.deque(maxlen=_MAX_LOGGED_ERRORS)

        def log(self, level, msg: str) -> None:
            if level in (severity.INTERNAL_ERROR, severity.ERROR):
                self.errors.append(msg)
                log.error('TensorRT: %s', msg)
            elif level == severity.WARNING:
                log.warning('TensorRT: %s', msg)
            elif level == severity.INFO:
                log.debug('TensorRT: %s', msg)

    _LOGGER = _Logger()
    return _LOGGER


@contextlib.contextmanager
def _api_errors_as_unavailable():
    """Turn an AttributeError/TypeError from a TensorRT call into BackendUnavailable naming the version.

    A TensorRT release whose Python API differs from the documented 8.6/10.x one must make ``auto``
    fall back with the reason, not crash the node.
    """
    try:
        yield
    except (AttributeError, TypeError) as exc:
        version = getattr(sys.modules.get('tensorrt'), '__version__', 'unknown')
        raise BackendUnavailable(f'TensorRT {version} API call failed ({type(exc).__name__}: {exc}); this backend '
                                 'targets the TensorRT 8.6 and 10.x Python APIs') from exc


def _recent_errors(logger) -> str:
    return ('; TensorRT said: ' + ' | '.join(logger.errors)) if logger.errors else ''


# --------------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------------

def _network_flags(trt) -> int:
    if trt_major(trt) >= _TRT_ALWAYS_EXPLICIT_BATCH_MAJOR:
        return 0          # EXPLICIT_BATCH is deprecated and ignored from 10.0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def _onnx_hint(onnx_path: Path) -> str:
    """The ONNX hygiene errors/warnings, appended to a parse or build failure to explain it."""
    try:
        from .onnx_graph import check_onnx_for_tensorrt
        report = check_onnx_for_tensorrt(onnx_path, fold=False)
    except Exception as exc:  # the hint must never mask the real failure
        return f' (ONNX check could not run: {exc})'
    notes = report.errors + report.warnings
    return (' (ONNX check: ' + '; '.join(notes) + ')') if notes else ''


def serialize_engine(onnx_path: str | Path, fp16: bool = True, workspace: int = DEFAULT_WORKSPACE_BYTES,
                     dla_core: int = GPU_ONLY):
    """Parse ``onnx_path`` and build a serialized engine (``IHostMemory``, buffer protocol).

    fp32 builds clear the TF32 flag (on by default on Ampere and newer, Jetson Orin included): TF32
    rounds convolution/matmul inputs to 10-bit mantissas, which would make "fp32" mean something else.
    """
    trt = import_tensorrt()
    onnx_path = Path(onnx_path)
    logger = _trt_logger(trt)
    logger.errors.clear()
    builder = trt.Builder(logger)
    if builder is None:
        raise BackendUnavailable('TensorRT could not create a builder (no usable CUDA device?)'
                                 + _recent_errors(logger))
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):   # from file: resolves external weights, if any
        errors = ' | '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendUnavailable(f'TensorRT could not parse {onnx_path}: {errors}' + _onnx_hint(onnx_path))
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if any(int(d) < 0 for d in tensor.shape):
            raise BackendUnavailable(f'{onnx_path}: input {tensor.name} has dynamic shape {tuple(tensor.shape)}; '
                                     'export with static window shapes')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace))
    if fp16:
        if not hasattr(trt.BuilderFlag, 'FP16'):
            raise BackendUnavailable(f'TensorRT {trt.__version__} has no FP16 builder flag (strongly typed '
                                     'networks only): set enable_fp16=false or export an fp16 ONNX')
        config.set_flag(trt.BuilderFlag.FP16)
    elif hasattr(trt.BuilderFlag, 'TF32'):
        config.clear_flag(trt.BuilderFlag.TF32)
    if dla_core != GPU_ONLY:
        cores = int(builder.num_DLA_cores)
        if dla_core >= cores:
            raise BackendUnavailable(f'dla_core={dla_core} requested but this device has {cores} DLA core(s)')
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)   # layers DLA cannot run (e.g. spike Cast) go to the GPU
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailable(f'TensorRT engine build failed for {onnx_path}' + _recent_errors(logger)
                                 + _onnx_hint(onnx_path))
    return serialized


def engine_key(onnx_path: str | Path, opts: TensorRTOptions, trt=None, device: CudaDevice | None = None
               ) -> EngineKey:
    """The cache key of an engine built from ``onnx_path`` with ``opts`` on this machine."""
    from ..model_card import sha256_file
    trt = trt or import_tensorrt()
    device = device or cuda_device()
    return EngineKey(onnx_sha256=sha256_file(onnx_path), trt_version=str(trt.__version__), gpu_name=device.name,
                     compute_capability=device.compute_capability, precision=opts.precision,
                     dla_core=opts.dla_core, workspace_bytes=opts.max_workspace_size)


def _resolve_engine(onnx_path: Path | None, opts: TensorRTOptions, stem: str) -> tuple[CacheResult, EngineKey | None]:
    """Find or build the engine that ``opts`` asks for; returns the cache result and its key."""
    explicit = opts.engine_file_path
    if (explicit is not None and explicit.is_file() and explicit.stat().st_size > 0
            and not opts.force_engine_update and engine_cache.read_metadata(explicit) is None):
        # e.g. built with trtexec: nothing to check it against; a mismatch fails loudly at load time
        return CacheResult(path=explicit, hit=True, build_seconds=None,
                           reason='explicit engine without av_snn_ros metadata: used as is'), None
    if onnx_path is None:
        raise BackendUnavailable('no ONNX model to build a TensorRT engine from (set model_file_path or '
                                 'export the card with `av-snn export`)')
    if not onnx_path.is_file():
        raise BackendUnavailable(f'ONNX model not found: {onnx_path}')
    trt = import_tensorrt()
    key = engine_key(onnx_path, opts, trt=trt)

    def build():
        return serialize_engine(onnx_path, fp16=opts.enable_fp16, workspace=opts.max_workspace_size,
                                dla_core=opts.dla_core)

    extra = {'onnx_path': str(onnx_path)}
    if explicit is not None:
        result = engine_cache.ensure_engine(explicit, key, build, opts.force_engine_update, extra=extra)
    else:
        result = EngineCache(opts.engine_cache_dir).get_or_build(key, build, stem=stem,
                                                                 force_engine_update=opts.force_engine_update,
                                                                 extra=extra)
    return result, key


def build_engine(onnx_path: str | Path, engine_path: str | Path, fp16: bool = True,
                 workspace: int = DEFAULT_WORKSPACE_BYTES, dla_core: int = GPU_ONLY,
                 force_engine_update: bool = False) -> CacheResult:
    """Build the engine for ``onnx_path`` at ``engine_path`` (with its metadata sidecar).

    An engine already there for the same key (ONNX hash, TensorRT version, GPU, precision, DLA core,
    workspace) is kept unless ``force_engine_update``. ``result.path`` is the engine file.
    """
    opts = TensorRTOptions.from_options({
        'model_file_path': str(onnx_path), 'engine_file_path': str(engine_path),
        'force_engine_update': force_engine_update, 'enable_fp16': fp16, 'max_workspace_size': workspace,
        'dla_core': dla_core})
    key = engine_key(opts.model_file_path, opts)
    # unlike create(), a file here without metadata is rebuilt: the caller asked for a build
    return engine_cache.ensure_engine(
        opts.engine_file_path, key, force_engine_update=opts.force_engine_update,
        builder=lambda: serialize_engine(opts.model_file_path, fp16=opts.enable_fp16,
                                         workspace=opts.max_workspace_size, dla_core=opts.dla_core),
        extra={'onnx_path': str(opts.model_file_path)})


def _card_onnx(card, path: Path | None = None) -> Path:
    """The card's ONNX, or ``path`` (``model_file_path``) when the card vouches for it (ModelCard.verified_onnx)."""
    from ..model_card import ModelFileError
    try:
        return Path(card.verified_onnx(path))
    except ModelFileError as exc:
        raise BackendUnavailable(str(exc)) from exc


def build_engine_from_card(card, out_dir: str | Path | None = None, **options) -> Path:
    """Build (or reuse) the TensorRT engine for ``card``'s ONNX; returns the engine path.

    ``out_dir`` is the engine cache folder to use (default: ``engine_cache_dir`` or the engine cache);
    ``engine_file_path`` in ``options`` names the file directly instead. Used by ``av-snn export --engine``.
    """
    if out_dir is not None:
        options = {**options, 'engine_cache_dir': out_dir}
    opts = TensorRTOptions.from_options(options)
    import_tensorrt()   # the clear reasons first, in the same order as create()
    cuda_device()
    onnx_path = _card_onnx(card, opts.model_file_path)
    with _api_errors_as_unavailable():
        result, _ = _resolve_engine(onnx_path, opts, stem=card.name)
    log.info('TensorRT engine %s (%s)', result.path, result.reason)
    return result.path


# --------------------------------------------------------------------------------------------------
# inference
# --------------------------------------------------------------------------------------------------



def _role_map(names: Sequence[str], roles: Sequence[str]) -> dict[str, str]:
    """role -> engine tensor name: by name when the engine uses the contract names, else by position."""
    if set(roles) & set(names):
        return {role: role for role in roles if role in names}
    return dict(zip(roles, names))


class TensorRTBackend(InferenceBackend):
    """One deserialized engine with fixed device buffers. Not thread-safe: one caller at a time."""

    name = 'tensorrt'

    def __init__(self, engine_path: str | Path, modality_heads: Sequence[str] | None = None,
                 dla_core: int = GPU_ONLY) -> None:
        super().__init__()
        trt = import_tensorrt()
        device = cuda_device()
        import torch
        self._torch = torch
        self._trt_logger = logger = _trt_logger(trt)
        logger.errors.clear()
        engine_path = Path(engine_path)
        runtime = trt.Runtime(logger)
        if dla_core != GPU_ONLY:
            runtime.DLA_core = int(dla_core)
        try:
            data = engine_path.read_bytes()
        except OSError as exc:
            raise BackendUnavailable(f'cannot read TensorRT engine {engine_path}: {exc}') from exc
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise BackendUnavailable(
                f'TensorRT {trt.__version__} could not load engine {engine_path} (built by another TensorRT '
                f'version or for another GPU? rebuild with force_engine_update=true)' + _recent_errors(logger))
        context = engine.create_execution_context()
        if context is None:
            raise BackendUnavailable('TensorRT could not create an execution context (out of GPU memory?)'
                                     + _recent_errors(logger))
        self._runtime, self._engine, self._context = runtime, engine, context
        self._device = torch.device('cuda', device.index)
        self._stream = torch.cuda.Stream(device=self._device)   # not the legacy default stream: no implicit syncs
        inputs, outputs = {}, {}
        for i in range(engine.num_io_tensors):
            tname = engine.get_tensor_name(i)
            shape = tuple(int(d) for d in engine.get_tensor_shape(tname))
            if any(d < 0 for d in shape):
                raise BackendUnavailable(f'engine tensor {tname} has dynamic shape {shape}; this backend runs '
                                         'static window engines only (export with fixed shapes)')
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(tname)))
            is_input = engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT
            (inputs if is_input else outputs)[tname] = (shape, dtype)
        self._inputs = _role_map(list(inputs), INPUT_NAMES)
        self._outputs = _role_map(list(outputs), OUTPUT_NAMES)
        if 'logits' not in self._outputs:
            raise BackendUnavailable(f'engine {engine_path} has no logits output (outputs: {list(outputs)})')
        self._engine_shapes = {role: inputs[name][0] for role, name in self._inputs.items()}
        #: window shapes ``infer`` accepts; the card adds any modality the engine dropped (see set_window_shapes)
        self._expected = dict(self._engine_shapes)
        # fixed device buffers bound once; pinned host staging for asynchronous copies
        self._device_buffers, self._host_buffers = {}, {}
        for tname, (shape, dtype) in {**inputs, **outputs}.items():
            tdtype = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
            dev = torch.empty(shape, dtype=tdtype, device=self._device)
            self._device_buffers[tname] = dev
            self._host_buffers[tname] = torch.empty(shape, dtype=tdtype, pin_memory=True)
            if not context.set_tensor_address(tname, dev.data_ptr()):
                raise BackendUnavailable(f'TensorRT rejected the buffer for {tname}' + _recent_errors(logger))
        self._real_outputs = set(real_outputs(modality_heads or None))
        self.info.update({
            'backend': 'tensorrt', 'engine_path': str(engine_path), 'trt_version': str(trt.__version__),
            'gpu': device.name, 'compute_capability': device.compute_capability,
            'inputs': {name: list(inputs[name][0]) for name in inputs},
            'outputs': {name: list(outputs[name][0]) for name in outputs},
        })

    @classmethod
    def from_onnx(cls, onnx_path: str | Path, enable_fp16: bool = True, cache_dir: str | Path | None = None,
                  modality_heads: Sequence[str] | None = None, **options) -> 'TensorRTBackend':
        """Build or reuse a cached engine for ``onnx_path`` and load it (no warm-up)."""
        opts = TensorRTOptions.from_options({**options, 'model_file_path': str(onnx_path),
                                             'enable_fp16': enable_fp16,
                                             'engine_cache_dir': str(cache_dir) if cache_dir else None})
        import_tensorrt()
        cuda_device()
        with _api_errors_as_unavailable():
            result, key = _resolve_engine(opts.model_file_path, opts, stem=Path(onnx_path).stem)
            backend = cls(result.path, modality_heads=modality_heads, dla_core=opts.dla_core)
        backend.info.update(_cache_info(result, key, opts.model_file_path))
        return backend

    def engine_input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the engine's inputs by role (a modality the model ignores may be absent)."""
        return dict(self._engine_shapes)

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Window shapes :meth:`infer` accepts, by role."""
        return dict(self._expected)

    def set_window_shapes(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Declare the full window contract (from the model card); must agree with the engine's inputs."""
        for role, shape in shapes.items():
            engine_shape = self._engine_shapes.get(role)
            if engine_shape is not None and tuple(shape) != engine_shape:
                raise BackendUnavailable(f'engine input {self._inputs[role]} has shape {engine_shape} but the '
                                         f'model card expects {tuple(shape)}: rebuild the engine from this card')
        self._expected.update({role: tuple(shape) for role, shape in shapes.items()})

    @property
    def batch(self) -> int:
        """The engine's static batch (windows per execution)."""
        return next(iter(self._expected.values()))[1]

    def _check(self, role: str, array: np.ndarray) -> np.ndarray:
        """``array`` as a window batch of ``role``: shape (T, any B, C, H, W) of the contract, floating point."""
        array = np.asarray(array)
        want = self._expected.get(role)
        if want is not None and (array.ndim != len(want) or array.shape[:1] + array.shape[2:] != want[:1] + want[2:]):
            raise ValueError(f'{role} window has shape {array.shape}, the engine expects {want} '
                             '(T, B, C, H, W; batch may be any multiple when the engine batch is 1)')
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(f'{role} window must be floating point, got {array.dtype}')
        return array

    def _stage(self, role: str, array: np.ndarray) -> None:
        name = self._inputs.get(role)
        if name is None:
            return      # the model ignores this modality and TensorRT dropped the unused input
        host = self._host_buffers[name]
        np.copyto(host.numpy(), array, casting='same_kind')
        self._device_buffers[name].copy_(host, non_blocking=True)

    def _execute(self, audio: np.ndarray, visual: np.ndarray) -> dict[str, np.ndarray]:
        """One engine execution on exactly the engine's batch: stage, enqueue, copy back, synchronise."""
        torch = self._torch
        self._trt_logger.errors.clear()
        with torch.cuda.stream(self._stream):
            self._stage('audio', audio)
            self._stage('visual', visual)
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError('TensorRT execute_async_v3 failed' + _recent_errors(self._trt_logger))
            for name in self._outputs.values():
                self._host_buffers[name].copy_(self._device_buffers[name], non_blocking=True)
        self._stream.synchronize()
        return {role: self._host_buffers[name].numpy().astype(np.float32, copy=True)
                for role, name in self._outputs.items()}

    def infer(self, audio: np.ndarray, visual: np.ndarray) -> InferenceResult:
        if self._context is None:
            raise RuntimeError('TensorRT backend is closed')
        audio, visual = self._check('audio', audio), self._check('visual', visual)
        batch = audio.shape[1]
        if visual.shape[1] != batch:
            raise ValueError(f'audio batch {batch} != visual batch {visual.shape[1]}')
        if batch == self.batch:
            values = self._execute(audio, visual)
        elif self.batch == 1:
            # the engine is built for one window (static shapes); run a larger batch window by window
            parts = [self._execute(audio[:, b:b + 1], visual[:, b:b + 1]) for b in range(batch)]
            values = {role: np.concatenate([p[role] for p in parts], axis=0) for role in parts[0]}
        else:
            raise ValueError(f'the engine takes batch {self.batch}, got {batch}')
        return InferenceResult(
            logits=values['logits'],
            audio_logits=values.get('audio_logits') if 'audio_logits' in self._real_outputs else None,
            visual_logits=values.get('visual_logits') if 'visual_logits' in self._real_outputs else None)

    def close(self) -> None:
        """Drop the context, engine and buffers (GPU memory is returned to torch's caching allocator)."""
        for attr in ('_context', '_engine', '_runtime'):
            if hasattr(self, attr):
                setattr(self, attr, None)
        self._device_buffers, self._host_buffers = {}, {}


def _cache_info(result: CacheResult, key: EngineKey | None, onnx_path: Path | None) -> dict[str, Any]:
    """Diagnostics of where the engine came from; ``key`` is None for an explicit engine without metadata."""
    unknown = 'unknown (engine built outside av_snn_ros)'
    return {
        'engine_cache': 'hit' if result.hit else 'miss',
        'engine_cache_reason': result.reason,
        'build_seconds': None if result.build_seconds is None else round(result.build_seconds, 3),
        'precision': key.precision if key else unknown,
        'dla_core': key.dla_core if key else unknown,
        'workspace_bytes': key.workspace_bytes if key else unknown,
        'onnx_path': str(onnx_path) if onnx_path else None,
    }


def _apply_card_shapes(backend: TensorRTBackend, card) -> None:
    """Check the engine against the card's window shapes (time first) at the engine's static batch."""
    pre = getattr(card, 'preprocessing', None)
    if pre is None:
        return
    engine_shapes = backend.engine_input_shapes()
    batches = {shape[1] for shape in engine_shapes.values() if len(shape) > 1}
    if len(batches) != 1:
        raise BackendUnavailable(f'engine inputs {engine_shapes} are not (T, B, C, H, W) windows with one batch size')
    audio, visual = input_shapes(pre, batches.pop())
    backend.set_window_shapes({'audio': audio, 'visual': visual})


#: the options class :func:`av_snn_ros.backends.base.create_backend` validates for this backend
Options = TensorRTOptions


def create(card, options: TensorRTOptions | None = None) -> TensorRTBackend:
    """Backend factory used by :func:`~av_snn_ros.backends.base.create_backend` (warmed up when returned).

    ``create_backend`` validates the options first: a bad value is a config error, raised, never skipped.
    """
    opts = options or TensorRTOptions()
    import_tensorrt()            # the two cheapest, most common reasons to fall back, checked first
    cuda_device()
    with _api_errors_as_unavailable():
        return _create(card, opts)


def _create(card, opts: TensorRTOptions) -> TensorRTBackend:
    onnx_path = opts.model_file_path
    if onnx_path is not None or getattr(card, 'onnx', None) is not None:
        onnx_path = _card_onnx(card, onnx_path)      # hash-checked against the card
    result, key = _resolve_engine(onnx_path, opts, stem=getattr(card, 'name', 'model'))
    heads = getattr(card, 'modality_heads', None)
    try:
        backend = TensorRTBackend(result.path, modality_heads=heads, dla_core=opts.dla_core)
    except BackendUnavailable as exc:
        if not (result.hit and key is not None):
            raise
        # a cached engine that passed its hash check but does not deserialize (e.g. a driver/TensorRT
        # update that kept the version string): rebuild once rather than fall back for good
        log.warning('cached TensorRT engine %s does not load (%s); rebuilding it', result.path, exc)
        result, key = _resolve_engine(onnx_path, replace(opts, force_engine_update=True),
                                      stem=getattr(card, 'name', 'model'))
        backend = TensorRTBackend(result.path, modality_heads=heads, dla_core=opts.dla_core)
    try:
        _apply_card_shapes(backend, card)
        backend.info.update(_cache_info(result, key, onnx_path))
        shapes = backend.input_shapes()
        zeros = {role: np.zeros(shape, dtype=np.float32) for role, shape in shapes.items()}
        start = time.perf_counter()
        if opts.warmup_iterations:
            backend.warmup(zeros.get('audio'), zeros.get('visual'), iterations=opts.warmup_iterations)
        backend.info['warmup_seconds'] = round(time.perf_counter() - start, 4)
        backend.info['warmup_iterations'] = opts.warmup_iterations
    except BaseException:
        backend.close()
        raise
    log.info('TensorRT backend ready: %s (engine cache %s, %s, TensorRT %s on %s, warm-up %.3f s)', result.path,
             backend.info['engine_cache'], backend.info['precision'], backend.info['trt_version'],
             backend.info['gpu'], backend.info['warmup_seconds'])
    return backend
