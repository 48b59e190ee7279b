"""Keep freed heap memory in the process between windows (glibc's malloc), for the torch CPU backend.

torch's CPU allocator has no cache (onnxruntime has its own arena): every window allocates its
activations afresh, tens of megabytes for a 128x128 model, and glibc gives freed memory back to the
kernel once the top of the heap is free, so the next window pays page faults on every new page. On the
2-core development VM that cost MISNet-XS 15-25 ms per window with the native kernels (separate runs of
one script: 100-108 ms without, 81-85 ms with the settings below). The settings keep memory up to
the largest window's working set mapped: RSS stays at that peak instead of rising and falling per
window (docs/performance.md). Process-wide, like ``torch.set_num_threads``: the backend owns its process.
"""
from __future__ import annotations

import ctypes
import platform
import threading

# mallopt parameters from glibc's <malloc.h>
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
#: allocations up to this size come from the heap, not from mmap (the largest glibc accepts on 64-bit)
MMAP_THRESHOLD = 32 << 20
#: free memory at the top of the heap kept before any is returned to the kernel
TRIM_THRESHOLD = 512 << 20
#: extra memory requested whenever the heap grows
TOP_PAD = 64 << 20

_lock = threading.Lock()
_result: str | None = None


def retain_freed_memory() -> str:
    """Apply the settings once per process; returns what was done (or why not) for diagnostics."""
    global _result
    with _lock:
        if _result is None:
            _result = _apply()
        return _result


def _apply() -> str:
    if platform.libc_ver()[0] != 'glibc':
        return f'unchanged: not glibc ({platform.libc_ver()[0] or "unknown libc"})'
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError) as exc:
        return f'unchanged: mallopt not found ({exc})'
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = {'mmap_threshold': (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                'trim_threshold': (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                'top_pad': (_M_TOP_PAD, TOP_PAD)}
    failed = [name for name, (param, value) in settings.items() if mallopt(param, value) != 1]
    if failed:
        return f'partly: glibc refused {", ".join(failed)}'
    return (f'glibc keeps freed memory: mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold '
            f'{TRIM_THRESHOLD >> 20} MiB, top pad {TOP_PAD >> 20} MiB')
