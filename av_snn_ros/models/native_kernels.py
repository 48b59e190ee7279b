"""Native CPU kernels for inference: event-driven spiking convolution and one-pass multi-step neurons.

On a 2-core CPU the dense fp32 convolutions of MISNet-XS run near the machine's GEMM rate and still
cannot go below ~1.6x of eager torch, yet 78-100 % of their inputs are zeros (spikes). The kernels in
``spiking_kernels.c`` do the work the spikes ask for: each output pixel sums the weight rows of the
non-zero inputs around it, and each neuron layer charges, fires and resets all T steps in one pass.
Convolutions are exact up to the order of the float additions (a dense kernel is used instead above
:data:`DENSE_ABOVE` density); the neurons give the torch fast paths' values bit for bit.

The C file is compiled on first use with the system C compiler (``$CC``, else ``cc``; ``-O3
-march=native -fopenmp``) into a per-user cache (``$AV_SNN_KERNEL_CACHE``, else
``$XDG_CACHE_HOME/av_snn_ros/kernels``), keyed by the source, the compiler, the flags and the CPU, and
loaded with ctypes (no Python headers, no build step at install). Models use the kernels only inside
:func:`enabled` (the torch backend's ``native_kernels`` option), only at inference and only for the
shapes and layouts they support; everything else runs the torch code as before.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Iterator

import torch

SOURCE = Path(__file__).with_name('spiking_kernels.c')
FLAGS = ('-O3', '-march=native', '-fopenmp', '-shared', '-fPIC', '-std=gnu11')
#: input density above which a convolution runs dense: the event-driven kernel broke even at
#: ~22-25 % on MISNet-XS's layers (2 threads, AVX-512; docs/performance.md)
DENSE_ABOVE = 0.25
#: convolutions with fewer input channels (the stems, fed with real-valued data) always run dense
MIN_IN_CHANNELS = 16

_state = threading.local()
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_error: str | None = None


class NativeKernelsUnavailable(RuntimeError):
    """No C compiler, the compile failed, or the library could not be loaded (the message says which)."""


@contextlib.contextmanager
def enabled(on: bool = True) -> Iterator[None]:
    """Let the models on this thread use the native kernels inside the block (loads them first)."""
    if on:
        load()
    previous = getattr(_state, 'on', False)
    _state.on = on
    try:
        yield
    finally:
        _state.on = previous


def active() -> bool:
    """True inside :func:`enabled` on this thread (models then try the native kernels)."""
    return getattr(_state, 'on', False)


def cache_dir() -> Path:
    """Where compiled libraries are kept."""
    env = os.environ.get('AV_SNN_KERNEL_CACHE')
    if env:
        return Path(env)
    base = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
    return Path(base) / 'av_snn_ros' / 'kernels'


def _compiler() -> str:
    cc = os.environ.get('CC') or shutil.which('cc') or shutil.which('gcc') or shutil.which('clang')
    if not cc:
        raise NativeKernelsUnavailable('no C compiler found (set $CC or install gcc, e.g. '
                                       '`apt install gcc`); the native kernels are compiled on first use')
    return cc


def _cpu_signature() -> str:
    # -march=native code is only valid on this kind of CPU: the cache key includes its feature flags
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith(('flags', 'Features')):
                return line
    except OSError:
        pass
    return platform.processor()


def library_path(cc: str) -> Path:
    """The cache path of the library for this source, compiler, flag set and CPU."""
    try:
        version = subprocess.run([cc, '--version'], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise NativeKernelsUnavailable(f'C compiler {cc!r} does not run: {exc}') from exc
    key = hashlib.sha256('\0'.join([SOURCE.read_text(), cc, version, *FLAGS, platform.machine(),
                                    _cpu_signature()]).encode()).hexdigest()[:16]
    return cache_dir() / f'spiking_kernels-{key}.so'


def _compile(cc: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # compile next to the target and rename: concurrent first uses never load a half-written file
    fd, tmp = tempfile.mkstemp(suffix='.so', dir=target.parent)
    os.close(fd)
    # a compiler without OpenMP (e.g. clang without libomp) still gives single-threaded kernels
    flag_sets = (FLAGS, tuple(f for f in FLAGS if f != '-fopenmp'))
    try:
        errors = []
        for flags in flag_sets:
            proc = subprocess.run([cc, *flags, '-o', tmp, str(SOURCE), '-lm'], capture_output=True, text=True,
                                  timeout=300)
            if proc.returncode == 0:
                break
            errors.append(proc.stderr.strip())
        else:
            raise NativeKernelsUnavailable(f'compiling {SOURCE.name} with {cc} failed:\n{errors[0]}')
        os.replace(tmp, target)
    except (OSError, subprocess.SubprocessError) as exc:
        raise NativeKernelsUnavailable(f'compiling {SOURCE.name} with {cc} failed: {exc}') from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load() -> ctypes.CDLL:
    """The compiled kernels (compiled on first use); raises :class:`NativeKernelsUnavailable`."""
    global _lib, _error
    with _lock:
        if _lib is not None:
            return _lib
        if _error is not None:           # do not retry a failed compile on every window
            raise NativeKernelsUnavailable(_error)
        try:
            cc = _compiler()
            path = library_path(cc)
            if not path.exists():
                _compile(cc, path)
            try:
                lib = ctypes.CDLL(str(path))
            except OSError as exc:
                raise NativeKernelsUnavailable(f'cannot load {path}: {exc}') from exc
        except NativeKernelsUnavailable as exc:
            _error = str(exc)
            raise
        _declare(lib)
        _lib = lib
        return lib


def available() -> tuple[bool, str]:
    """(True, library path) or (False, why not), compiling on first call."""
    try:
        return True, str(load()._name)
    except NativeKernelsUnavailable as exc:
        return False, str(exc)


def _declare(lib: ctypes.CDLL) -> None:
    p, i, i64, f, d = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_float, ctypes.c_double
    lib.av_spike_conv2d.restype = i64
    lib.av_spike_conv2d.argtypes = [p, i, i, i, i, p, p, i, i, i, p, p, p, p, d, i]
    lib.av_lif_multistep.restype = None
    lib.av_lif_multistep.argtypes = [p, p, p, i64, i64, f, f, i, f, i]
    lib.av_mlif_multistep.restype = None
    lib.av_mlif_multistep.argtypes = [p, p, p, p, p, p, i64, i64, f, f, f, f, i]


# ------------------------------------------------------------------------------------------ kernels

def conv_weight_layout(weight: torch.Tensor) -> torch.Tensor:
    """A conv weight ``(Cout, Cin, KH, KW)`` as the kernel reads it: ``(KH, KW, Cin, Cout)`` contiguous."""
    return weight.detach().permute(2, 3, 1, 0).contiguous().float()


def spike_conv2d(x: torch.Tensor, weight_khwc: torch.Tensor, bias: torch.Tensor,
                 max_density: float = DENSE_ABOVE) -> torch.Tensor | None:
    """Stride-1 "same" convolution of a channels-last ``(N, Cin, H, W)`` float32 CPU tensor.

    Returns the ``(N, Cout, H, W)`` channels-last output, or ``None`` when the input is denser than
    ``max_density`` or not in a layout the kernel reads (the caller then runs its dense convolution).
    """
    if (x.dtype != torch.float32 or x.device.type != 'cpu' or x.dim() != 4
            or not x.is_contiguous(memory_format=torch.channels_last)):
        return None
    kh, kw, cin, cout = weight_khwc.shape
    n, c, h, w = x.shape
    if c != cin:
        raise ValueError(f'input has {c} channels, the weight {cin}')
    lib = load()
    out = torch.empty((n, cout, h, w), memory_format=torch.channels_last)
    pixels = n * h * w
    cnt, idx, val = _workspace(pixels, pixels * cin)
    nnz = lib.av_spike_conv2d(x.data_ptr(), n, h, w, cin, weight_khwc.data_ptr(), bias.data_ptr(), cout,
                              kh, kw, out.data_ptr(), cnt.data_ptr(), idx.data_ptr(), val.data_ptr(),
                              float(max_density), torch.get_num_threads())
    return None if nnz < 0 else out


def _workspace(pixels: int, entries: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """This thread's event lists (counts, channel indices, values), grown to the largest layer seen.

    Reused from call to call: freshly allocated, these megabytes cost page faults on every layer.
    """
    ws = getattr(_state, 'workspace', None)
    if ws is None or ws[0].numel() < pixels or ws[1].numel() < entries:
        size = (max(pixels, ws[0].numel() if ws else 0), max(entries, ws[1].numel() if ws else 0))
        ws = _state.workspace = (torch.empty(size[0], dtype=torch.int32), torch.empty(size[1], dtype=torch.int32),
                                 torch.empty(size[1], dtype=torch.float32))
    return ws


def _flat_steps(x: torch.Tensor) -> bool:
    """True when ``x`` (T, ...) is float32 on the CPU with each step one dense block, steps back to back."""
    if x.dtype != torch.float32 or x.device.type != 'cpu' or x.dim() < 2 or x.numel() == 0:
        return False
    step = x[0]
    dense = step.is_contiguous() or (step.dim() == 4 and step.is_contiguous(memory_format=torch.channels_last))
    return dense and x.stride(0) == step.numel()


def lif_multistep(drive: torch.Tensor, decay: float, threshold: float, reset: float | None
                  ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Spikes ``(T, ...)`` and the last membrane of a LIF layer from a zero membrane.

    ``U = decay * U + D[t]`` (one fused multiply-add), fire at ``U >= threshold``, soft reset
    (``reset`` None) or hard reset to ``reset``. ``None`` when ``drive``'s layout is not supported.
    """
    if not _flat_steps(drive):
        return None
    lib = load()
    spikes = torch.empty_strided(drive.size(), drive.stride(), dtype=torch.float32)
    v = torch.empty_strided(drive[0].size(), drive[0].stride(), dtype=torch.float32)
    steps = drive.shape[0]
    lib.av_lif_multistep(drive.data_ptr(), spikes.data_ptr(), v.data_ptr(), steps, drive[0].numel(),
                         decay, threshold, int(reset is not None), 0.0 if reset is None else reset,
                         torch.get_num_threads())
    return spikes, v


def mlif_multistep(c_a: torch.Tensor, c_v: torch.Tensor, decay: float, alpha_a: float, alpha_v: float,
                   threshold: float) -> tuple[torch.Tensor, ...] | None:
    """MISNet's MLIF from zero membranes: ``(s_a, s_v, v_a, v_v)``; ``None`` for unsupported layouts."""
    if (c_a.shape != c_v.shape or c_a.stride() != c_v.stride()
            or not _flat_steps(c_a) or not _flat_steps(c_v)):
        return None
    lib = load()
    s_a = torch.empty_strided(c_a.size(), c_a.stride(), dtype=torch.float32)
    s_v = torch.empty_strided(c_a.size(), c_a.stride(), dtype=torch.float32)
    v_a = torch.empty_strided(c_a[0].size(), c_a[0].stride(), dtype=torch.float32)
    v_v = torch.empty_strided(c_a[0].size(), c_a[0].stride(), dtype=torch.float32)
    lib.av_mlif_multistep(c_a.data_ptr(), c_v.data_ptr(), s_a.data_ptr(), s_v.data_ptr(), v_a.data_ptr(),
                          v_v.data_ptr(), c_a.shape[0], c_a[0].numel(), decay, alpha_a, alpha_v, threshold,
                          torch.get_num_threads())
    return s_a, s_v, v_a, v_v
