"""A content-addressed cache of serialized TensorRT engines (pure Python; TensorRT never imported here).

A TensorRT engine is only valid for the exact ONNX model, TensorRT version and GPU (compute capability)
it was built for, and is tuned for a precision, a DLA core and a workspace limit. :class:`EngineKey`
holds exactly those facts; its digest names the cached file, so a change of any field is a cache miss
and the engine is rebuilt instead of failing (or, worse, silently running a stale model) at load time.

Every engine file has a JSON sidecar (``<engine>.json``) with the key, the engine's own sha256 and size,
the build time and the build duration. A lookup is a hit only when the sidecar matches the key and the
engine file matches the sidecar's hash, so a truncated, empty or replaced file is rebuilt. Files are
written to a temporary name and renamed into place (atomic on POSIX), engine first, sidecar last: a
crash mid-write leaves either the old pair or an engine without a sidecar, which is treated as a miss.

The cache folder is ``$AV_SNN_ENGINE_CACHE`` if set, else ``$XDG_CACHE_HOME/av_snn_ros/engines``
(``~/.cache/av_snn_ros/engines``). On a robot point it at a persistent volume: a build takes minutes
on a Jetson.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Union

log = logging.getLogger(__name__)

#: environment variable naming the engine cache folder
ENGINE_CACHE_ENV = 'AV_SNN_ENGINE_CACHE'
#: bumped when the key or sidecar layout changes, so old cache entries become misses, not errors
KEY_SCHEMA_VERSION = 1
#: precisions an engine can be built for
PRECISIONS = ('fp32', 'fp16')
#: ``dla_core`` value meaning "run on the GPU" (Isaac ROS uses the same convention)
GPU_ONLY = -1
ENGINE_SUFFIX = '.engine'
METADATA_SUFFIX = '.json'
#: hex characters of the key digest kept in a cached file's name (64 bits: collisions are not a concern)
_NAME_DIGEST_CHARS = 16
_SHA256_RE = re.compile(r'^[0-9a-f]{64}$')
_UNSAFE_NAME_CHARS = re.compile(r'[^A-Za-z0-9_.-]+')
_HASH_BLOCK_BYTES = 1 << 20

BytesLike = Union[bytes, bytearray, memoryview]
#: builds one serialized engine; TensorRT's ``IHostMemory`` supports the buffer protocol, so it qualifies
EngineBuilder = Callable[[], Any]


def default_cache_dir() -> Path:
    """``$AV_SNN_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/av_snn_ros/engines`` (default ``~/.cache/...``)."""
    env = os.environ.get(ENGINE_CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get('XDG_CACHE_HOME')
    base = Path(xdg).expanduser() if xdg else Path.home() / '.cache'
    return base / 'av_snn_ros' / 'engines'


def sha256_bytes(data: BytesLike) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as fh:
        for block in iter(lambda: fh.read(_HASH_BLOCK_BYTES), b''):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized engine depends on. Equal keys <=> interchangeable engines.

    Attributes:
        onnx_sha256: sha256 of the ONNX file the engine was parsed from.
        trt_version: ``tensorrt.__version__`` (engines do not load across TensorRT versions).
        gpu_name: CUDA device name, e.g. ``Orin``.
        compute_capability: ``"major.minor"``, e.g. ``"8.7"`` (engines do not load across SM versions).
        precision: ``fp32`` or ``fp16``.
        dla_core: DLA core index, or :data:`GPU_ONLY` (-1).
        workspace_bytes: builder workspace limit; it changes which tactics TensorRT may pick.
    """

    onnx_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    dla_core: int = GPU_ONLY
    workspace_bytes: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.onnx_sha256, str) or not _SHA256_RE.match(self.onnx_sha256):
            raise ValueError(f'onnx_sha256 must be 64 lowercase hex characters, got {self.onnx_sha256!r}')
        for name in ('trt_version', 'gpu_name', 'compute_capability'):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f'{name} must be a non-empty string, got {value!r}')
        if self.precision not in PRECISIONS:
            raise ValueError(f'precision must be one of {PRECISIONS}, got {self.precision!r}')
        if isinstance(self.dla_core, bool) or not isinstance(self.dla_core, int) or self.dla_core < GPU_ONLY:
            raise ValueError(f'dla_core must be an int >= {GPU_ONLY}, got {self.dla_core!r}')
        if self.workspace_bytes is not None and (
                isinstance(self.workspace_bytes, bool) or not isinstance(self.workspace_bytes, int)
                or self.workspace_bytes <= 0):
            raise ValueError(f'workspace_bytes must be a positive int or None, got {self.workspace_bytes!r}')

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> 'EngineKey':
        """Inverse of :meth:`to_dict`; raises ValueError on missing/unknown fields."""
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) - names:
            raise ValueError(f'not an engine key: {data!r}')
        return cls(**data)

    def digest(self) -> str:
        """sha256 of the canonical JSON of the key (and the key schema version); stable across runs."""
        canonical = json.dumps({'schema': KEY_SCHEMA_VERSION, **self.to_dict()},
                               sort_keys=True, separators=(',', ':'))
        return sha256_bytes(canonical.encode('utf-8'))

    def file_name(self, stem: str = 'model') -> str:
        """A readable, stable file name: ``<stem>-<precision>-<gpu|dlaN>-<digest16>.engine``."""
        safe_stem = _UNSAFE_NAME_CHARS.sub('_', stem).strip('._') or 'model'
        target = 'gpu' if self.dla_core == GPU_ONLY else f'dla{self.dla_core}'
        return f'{safe_stem}-{self.precision}-{target}-{self.digest()[:_NAME_DIGEST_CHARS]}{ENGINE_SUFFIX}'


@dataclass
class CacheResult:
    """Outcome of :meth:`EngineCache.get_or_build` / :func:`ensure_engine`."""

    path: Path
    hit: bool
    reason: str                      # why it was a hit or why it was (re)built
    build_seconds: float | None      # None on a hit


def metadata_path(engine_path: Path) -> Path:
    """The JSON sidecar beside an engine file."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + METADATA_SUFFIX)


def read_metadata(engine_path: Path) -> dict[str, Any] | None:
    """The sidecar of ``engine_path`` as a dict, or None when it is missing or unreadable."""
    try:
        data = json.loads(metadata_path(engine_path).read_text(encoding='utf-8'))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def validate_engine_file(engine_path: Path, key: EngineKey) -> str | None:
    """Why the engine at ``engine_path`` cannot be reused for ``key``; None when it can."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        return 'no cached engine'
    size = engine_path.stat().st_size
    if size == 0:
        return 'cached engine file is empty'
    meta = read_metadata(engine_path)
    if meta is None:
        return 'cached engine has no readable metadata sidecar'
    if meta.get('schema') != KEY_SCHEMA_VERSION:
        return f'cache schema changed ({meta.get("schema")} -> {KEY_SCHEMA_VERSION})'
    try:
        cached_key = EngineKey.from_dict(meta.get('key'))
    except (TypeError, ValueError):
        return 'metadata sidecar holds no valid engine key'
    if cached_key != key:
        changed = [name for name, value in key.to_dict().items() if getattr(cached_key, name) != value]
        return 'engine key changed: ' + ', '.join(changed)
    if meta.get('engine_bytes') != size:
        return f'cached engine size {size} != {meta.get("engine_bytes")} recorded (truncated or replaced)'
    if meta.get('engine_sha256') != _sha256_file(engine_path):
        return 'cached engine does not match its recorded sha256 (corrupt or replaced)'
    return None


def _atomic_write(path: Path, data: BytesLike) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())   # an engine that survives a power cut half-written is worse than none
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_engine(engine_path: Path, data: BytesLike, key: EngineKey, build_seconds: float,
                 extra: dict[str, Any] | None = None) -> Path:
    """Atomically write an engine and then its metadata sidecar; returns ``engine_path``."""
    engine_path = Path(engine_path)
    view = memoryview(data).cast('B')
    if view.nbytes == 0:
        raise ValueError('refusing to cache an empty engine (the builder produced no bytes)')
    # drop a stale sidecar first so a crash between the two renames cannot pair old metadata with new bytes
    metadata_path(engine_path).unlink(missing_ok=True)
    _atomic_write(engine_path, view)
    meta = {
        'schema': KEY_SCHEMA_VERSION,
        'key': key.to_dict(),
        'key_digest': key.digest(),
        'engine_file': engine_path.name,
        'engine_sha256': sha256_bytes(view),
        'engine_bytes': view.nbytes,
        'built_at': datetime.now(timezone.utc).isoformat(timespec='seconds'),
        'build_seconds': round(float(build_seconds), 3),
        **({'extra': extra} if extra else {}),
    }
    _atomic_write(metadata_path(engine_path), (json.dumps(meta, indent=2, sort_keys=True) + '\n').encode())
    return engine_path


def remove_engine(engine_path: Path) -> bool:
    """Delete an engine and its sidecar; True if anything was removed."""
    removed = False
    for path in (Path(engine_path), metadata_path(engine_path)):
        try:
            path.unlink()
            removed = True
        except FileNotFoundError:
            pass
    return removed


def ensure_engine(engine_path: Path, key: EngineKey, builder: EngineBuilder,
                  force_engine_update: bool = False, extra: dict[str, Any] | None = None) -> CacheResult:
    """Reuse the engine at ``engine_path`` if it is valid for ``key``, else build and write it.

    ``builder()`` returns the serialized engine (bytes-like). It is the only step that needs TensorRT.
    """
    engine_path = Path(engine_path)
    reason = 'force_engine_update is set' if force_engine_update else validate_engine_file(engine_path, key)
    if reason is None:
        return CacheResult(path=engine_path, hit=True, reason='cached engine matches the key',
                           build_seconds=None)
    log.info('building TensorRT engine %s (%s)', engine_path, reason)
    start = time.perf_counter()
    data = builder()
    build_seconds = time.perf_counter() - start
    if data is None:
        raise RuntimeError('the engine builder returned nothing')
    write_engine(engine_path, data, key, build_seconds, extra=extra)
    return CacheResult(path=engine_path, hit=False, reason=reason, build_seconds=build_seconds)


class EngineCache:
    """Engines in one folder, named by :meth:`EngineKey.file_name`."""

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()

    def path_for(self, key: EngineKey, stem: str = 'model') -> Path:
        return self.cache_dir / key.file_name(stem)

    def lookup(self, key: EngineKey, stem: str = 'model') -> Path | None:
        """The cached engine for ``key`` if present and intact, else None."""
        path = self.path_for(key, stem)
        return path if validate_engine_file(path, key) is None else None

    def get_or_build(self, key: EngineKey, builder: EngineBuilder, stem: str = 'model',
                     force_engine_update: bool = False, extra: dict[str, Any] | None = None) -> CacheResult:
        """Return the cached engine for ``key``, building it with ``builder()`` on a miss or when forced."""
        return ensure_engine(self.path_for(key, stem), key, builder,
                             force_engine_update=force_engine_update, extra=extra)

    def invalidate(self, key: EngineKey, stem: str = 'model') -> bool:
        """Remove the cached engine for ``key``; True if there was one."""
        return remove_engine(self.path_for(key, stem))

    def entries(self) -> list[Path]:
        """Engine files in the cache folder (valid or not), sorted by name."""
        if not self.cache_dir.is_dir():
            return []
        return sorted(p for p in self.cache_dir.iterdir() if p.suffix == ENGINE_SUFFIX and p.is_file())
