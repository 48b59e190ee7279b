"""Engine cache logic: keys, hits, misses, invalidation, corrupt files, atomic writes.

These tests exercise the CACHE LOGIC ONLY, with a plain-Python builder that returns bytes; they do not
build or load a TensorRT engine (that is covered by the ``gpu``-marked tests in
test_tensorrt_backend.py, which need TensorRT and a CUDA GPU).
"""
import dataclasses
import json
import os

import pytest

from av_snn_ros.backends import engine_cache as ec
from av_snn_ros.backends.engine_cache import EngineCache, EngineKey

BASE = dict(onnx_sha256='a' * 64, trt_version='10.3.0', gpu_name='Orin', compute_capability='8.7',
            precision='fp16', dla_core=-1, workspace_bytes=1 << 28)
# one different, valid value for every key field
CHANGED = dict(onnx_sha256='b' * 64, trt_version='8.6.2', gpu_name='NVIDIA H100', compute_capability='9.0',
               precision='fp32', dla_core=0, workspace_bytes=1 << 26)


class CountingBuilder:
    """Stands in for TensorRT: returns distinct bytes per call and counts calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return f'serialized-engine-{self.calls}'.encode() * 100


def test_same_inputs_give_the_same_key_digest_and_file_name():
    a, b = EngineKey(**BASE), EngineKey(**dict(BASE))
    assert a == b and a.digest() == b.digest() and a.file_name('m') == b.file_name('m')
    name = a.file_name('misnet tiny/v1')
    assert name.startswith('misnet_tiny_v1-fp16-gpu-') and name.endswith('.engine')


@pytest.mark.parametrize('field', sorted(CHANGED))
def test_every_key_field_changes_the_digest(field):
    base = EngineKey(**BASE)
    changed = dataclasses.replace(base, **{field: CHANGED[field]})
    assert changed.digest() != base.digest()
    assert changed.file_name() != base.file_name()


@pytest.mark.parametrize('bad', [
    dict(onnx_sha256='xyz'), dict(precision='int4'), dict(dla_core=-2), dict(dla_core=True),
    dict(workspace_bytes=0), dict(gpu_name=''), dict(trt_version=None)])
def test_invalid_key_fields_raise_value_error(bad):
    with pytest.raises(ValueError):
        EngineKey(**{**BASE, **bad})


def test_key_round_trips_through_dict():
    key = EngineKey(**BASE)
    assert EngineKey.from_dict(key.to_dict()) == key
    with pytest.raises(ValueError):
        EngineKey.from_dict({**key.to_dict(), 'surprise': 1})


def test_default_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv(ec.ENGINE_CACHE_ENV, str(tmp_path / 'engines'))
    assert ec.default_cache_dir() == tmp_path / 'engines'
    assert EngineCache().cache_dir == tmp_path / 'engines'
    monkeypatch.delenv(ec.ENGINE_CACHE_ENV)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert ec.default_cache_dir() == tmp_path / 'xdg' / 'av_snn_ros' / 'engines'


def test_miss_builds_then_hit_reuses(tmp_path):
    cache, key, build = EngineCache(tmp_path), EngineKey(**BASE), CountingBuilder()
    assert cache.lookup(key) is None
    first = cache.get_or_build(key, build, stem='m')
    assert not first.hit and first.build_seconds is not None and build.calls == 1
    assert first.reason == 'no cached engine'
    second = cache.get_or_build(key, build, stem='m')
    assert second.hit and second.path == first.path and build.calls == 1
    assert cache.lookup(key, stem='m') == first.path
    meta = json.loads(ec.metadata_path(first.path).read_text())
    assert meta['key'] == key.to_dict() and meta['engine_bytes'] == first.path.stat().st_size
    assert meta['engine_sha256'] == ec.sha256_bytes(first.path.read_bytes())
    assert meta['build_seconds'] >= 0 and meta['built_at']
    assert cache.entries() == [first.path]


@pytest.mark.parametrize('field', sorted(CHANGED))
def test_changed_key_field_triggers_a_rebuild(tmp_path, field):
    """A stale engine stored under another key (e.g. an explicit engine_file_path) is rebuilt."""
    path, key, build = tmp_path / 'explicit.engine', EngineKey(**BASE), CountingBuilder()
    ec.ensure_engine(path, key, build)
    new_key = dataclasses.replace(key, **{field: CHANGED[field]})
    result = ec.ensure_engine(path, new_key, build)
    assert not result.hit and build.calls == 2 and field in result.reason
    assert ec.validate_engine_file(path, new_key) is None
    assert ec.validate_engine_file(path, key) is not None


def test_force_engine_update_rebuilds_a_valid_engine(tmp_path):
    cache, key, build = EngineCache(tmp_path), EngineKey(**BASE), CountingBuilder()
    path = cache.get_or_build(key, build).path
    old = path.read_bytes()
    result = cache.get_or_build(key, build, force_engine_update=True)
    assert not result.hit and result.reason == 'force_engine_update is set' and build.calls == 2
    assert path.read_bytes() != old and cache.lookup(key) == path


@pytest.mark.parametrize('damage', ['empty', 'truncate', 'flip', 'no_sidecar', 'bad_sidecar'])
def test_corrupt_cached_engine_is_detected_and_rebuilt(tmp_path, damage):
    cache, key, build = EngineCache(tmp_path), EngineKey(**BASE), CountingBuilder()
    path = cache.get_or_build(key, build).path
    data = path.read_bytes()
    if damage == 'empty':
        path.write_bytes(b'')
    elif damage == 'truncate':
        path.write_bytes(data[: len(data) // 2])
    elif damage == 'flip':
        path.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])
    elif damage == 'no_sidecar':
        ec.metadata_path(path).unlink()
    else:
        ec.metadata_path(path).write_text('{not json')
    assert cache.lookup(key) is None
    result = cache.get_or_build(key, build)
    assert not result.hit and build.calls == 2
    assert cache.lookup(key) == path and ec.validate_engine_file(path, key) is None


def test_invalidate_removes_engine_and_sidecar(tmp_path):
    cache, key, build = EngineCache(tmp_path), EngineKey(**BASE), CountingBuilder()
    path = cache.get_or_build(key, build).path
    assert cache.invalidate(key) is True
    assert not path.exists() and not ec.metadata_path(path).exists()
    assert cache.invalidate(key) is False
    assert not cache.get_or_build(key, build).hit


def test_failed_build_leaves_no_partial_files(tmp_path):
    cache, key = EngineCache(tmp_path), EngineKey(**BASE)

    def failing_builder():
        raise RuntimeError('parser error: unsupported node')

    with pytest.raises(RuntimeError, match='unsupported node'):
        cache.get_or_build(key, failing_builder)
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match='empty engine'):
        cache.get_or_build(key, lambda: b'')
    assert cache.entries() == [] and cache.lookup(key) is None


def test_builder_output_may_be_any_buffer(tmp_path):
    """TensorRT returns IHostMemory (buffer protocol); memoryview/bytearray stand in for it here."""
    cache, key = EngineCache(tmp_path), EngineKey(**BASE)
    payload = bytearray(range(256)) * 4
    path = cache.get_or_build(key, lambda: memoryview(payload)).path
    assert path.read_bytes() == bytes(payload)
