"""TensorRT backend.

Two kinds of test:

- CPU tests (run everywhere): option validation, the TensorRT 8.x/10.x network-flag choice, and the
  fallback policy when TensorRT or a CUDA device is missing: ``auto`` falls back to onnxruntime and
  records why; a pinned ``tensorrt`` raises BackendUnavailable with a clear message.
- ``gpu`` tests: build real engines from the exported card with TensorRT on a CUDA GPU, check the engine
  cache (miss, then hit, forced rebuild), compare with onnxruntime, run fp16. They are skipped, with the
  reason, wherever TensorRT or a CUDA device is missing; they never pass without TensorRT running.
"""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from av_snn_ros.backends import tensorrt_backend as trt_backend
from av_snn_ros.backends.base import BackendUnavailable, create_backend
from av_snn_ros.backends.engine_cache import read_metadata
from av_snn_ros.backends.tensorrt_backend import DEFAULT_WORKSPACE_BYTES, TensorRTOptions
from av_snn_ros.model_card import ModelCard
from av_snn_ros.parity import DEFAULT_TOLERANCES, compare_runtimes
from runtime_helpers import make_card, real_batch


def _tensorrt_import_error() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError) as exc:
        return str(exc)
    return None


def _gpu_skip_reason() -> str | None:
    reason = _tensorrt_import_error()
    if reason:
        return f'TensorRT not importable: {reason}'
    import torch
    if not torch.cuda.is_available():
        return f'no CUDA device (torch {torch.__version__}, torch.cuda.is_available() is False)'
    return None


GPU_SKIP = _gpu_skip_reason()


def gpu_test(fn):
    """Mark ``gpu`` and skip, naming what is missing, unless TensorRT and a CUDA device are both here."""
    return pytest.mark.gpu(pytest.mark.skipif(GPU_SKIP is not None, reason=str(GPU_SKIP))(fn))


needs_no_tensorrt = pytest.mark.skipif(_tensorrt_import_error() is None,
                                       reason='TensorRT is installed here: the no-TensorRT path is not taken')


@pytest.fixture(scope='module')
def card(tmp_path_factory) -> ModelCard:
    return ModelCard.load(make_card(tmp_path_factory))


@pytest.fixture
def engine_dir(tmp_path, monkeypatch):
    """A private engine cache, also as $AV_SNN_ENGINE_CACHE so nothing lands in ~/.cache."""
    folder = tmp_path / 'engines'
    monkeypatch.setenv('AV_SNN_ENGINE_CACHE', str(folder))
    return folder


# ------------------------------------------------------------------------------------------- options

def test_options_defaults_follow_isaac_ros_names():
    opts = TensorRTOptions.from_options({'model_file_path': '', 'engine_file_path': None})
    assert opts == TensorRTOptions()          # ROS '' / None are "unset"
    assert opts.enable_fp16 and opts.precision == 'fp16' and opts.dla_core == -1
    assert opts.max_workspace_size == DEFAULT_WORKSPACE_BYTES and not opts.force_engine_update
    opts = TensorRTOptions.from_options({'enable_fp16': False, 'max_workspace_size': 1 << 20,
                                         'engine_file_path': '~/m.engine', 'dla_core': -1})
    assert opts.precision == 'fp32' and opts.max_workspace_size == 1 << 20
    assert opts.engine_file_path.is_absolute()


@pytest.mark.parametrize('options,error', [
    ({'enable_fp16': 'yes'}, TypeError), ({'max_workspace_size': 0}, ValueError),
    ({'max_workspace_size': 1.5}, TypeError), ({'dla_core': -2}, ValueError), ({'dla_core': True}, TypeError),
    ({'dla_core': 0, 'enable_fp16': False}, ValueError), ({'engine_file_path': 3}, TypeError),
    ({'warmup_iterations': -1}, ValueError), ({'enable_fp61': True}, ValueError)])
def test_bad_options_raise(options, error):
    with pytest.raises(error):
        TensorRTOptions.from_options(options)


def test_bad_option_is_a_config_error_even_under_auto(card):
    """A typo'd value must fail loudly, not be 'handled' by silently falling back to another backend."""
    with pytest.raises(ValueError, match='DLA'):
        create_backend('auto', card, dla_core=0, enable_fp16=False)


@pytest.mark.parametrize('version,flags', [('8.6.2.3', 1 << 0), ('10.3.0', 0)])
def test_network_flags_explicit_batch_only_before_trt10(version, flags):
    fake = types.SimpleNamespace(__version__=version,
                                 NetworkDefinitionCreationFlag=types.SimpleNamespace(EXPLICIT_BATCH=0))
    assert trt_backend._network_flags(fake) == flags


def test_output_roles_by_name_or_position():
    assert trt_backend._role_map(['visual', 'audio'], ('audio', 'visual')) == {'audio': 'audio', 'visual': 'visual'}
    assert trt_backend._role_map(['in0', 'in1'], ('audio', 'visual')) == {'audio': 'in0', 'visual': 'in1'}
    # a unimodal engine whose unused input TensorRT dropped
    assert trt_backend._role_map(['audio'], ('audio', 'visual')) == {'audio': 'audio'}


# ------------------------------------------------------------------------------ fallback without TRT

@needs_no_tensorrt
def test_auto_falls_back_to_onnxruntime_with_the_tensorrt_reason(card, engine_dir):
    choice = create_backend('auto', card, device='cpu')     # cpu: no onnxruntime-vs-GPU contest next
    assert choice.backend.name == 'onnxruntime'
    reason = choice.skipped['tensorrt']
    assert 'TensorRT is not available' in reason and "No module named 'tensorrt'" in reason
    assert choice.backend.info['fallback_from']['tensorrt'] == reason
    assert not engine_dir.exists()            # nothing was built or cached


@needs_no_tensorrt
def test_pinned_tensorrt_raises_a_clear_error(card):
    with pytest.raises(BackendUnavailable, match=r"TensorRT is not available \(No module named 'tensorrt'\)"):
        create_backend('tensorrt', card)
    with pytest.raises(BackendUnavailable, match='TensorRT is not available'):
        trt_backend.build_engine_from_card(card)


def test_tensorrt_without_cuda_device_falls_back_naming_cuda(card, monkeypatch):
    """TensorRT importable but no GPU (e.g. a CPU container with the wheel): the reason is the device."""
    import torch
    if torch.cuda.is_available():
        pytest.skip('a CUDA device is present: the no-GPU path is not taken')
    stand_in = types.ModuleType('tensorrt')     # only lets `import tensorrt` succeed; nothing else is used
    stand_in.__version__ = '0.0-test'
    monkeypatch.setitem(sys.modules, 'tensorrt', stand_in)
    choice = create_backend('auto', card)
    assert choice.backend.name == 'onnxruntime'
    assert 'no CUDA device' in choice.skipped['tensorrt']
    with pytest.raises(BackendUnavailable, match='no CUDA device'):
        create_backend('tensorrt', card)


def test_unexpected_tensorrt_api_falls_back_instead_of_crashing(card, monkeypatch, engine_dir):
    """A TensorRT whose Python API lacks what 8.6/10.x document (stand-in module, pretend device):
    ``auto`` must record the reason and fall back; nothing may be cached."""
    stand_in = types.ModuleType('tensorrt')
    stand_in.__version__ = '99.0-test'
    monkeypatch.setitem(sys.modules, 'tensorrt', stand_in)
    monkeypatch.setattr(trt_backend, 'cuda_device',
                        lambda: trt_backend.CudaDevice(0, 'pretend', '8.7', 1 << 30))
    choice = create_backend('auto', card, device='cpu')
    assert choice.backend.name == 'onnxruntime'
    assert 'TensorRT 99.0-test API call failed' in choice.skipped['tensorrt']
    assert not list(engine_dir.glob('*.engine'))


# ---------------------------------------------------------------------------------------- GPU only

@gpu_test
def test_engine_is_built_cached_and_matches_onnxruntime_fp32(card, data_root, engine_dir):
    audio, visual, _ = real_batch(card.preprocessing, data_root, num=4)
    first = create_backend('tensorrt', card, enable_fp16=False).backend
    try:
        info = first.info
        assert info['engine_cache'] == 'miss' and info['build_seconds'] > 0 and info['precision'] == 'fp32'
        assert info['warmup_iterations'] == 2 and info['trt_version'] and info['gpu']
        meta = read_metadata(info['engine_path'])
        assert meta['key']['precision'] == 'fp32' and meta['key']['onnx_sha256'] == card.onnx_sha256
        got = first.infer(audio, visual)                   # batch 4 on a batch-1 engine: window by window
    finally:
        first.close()
    ref = create_backend('onnxruntime', card).backend.infer(audio, visual)
    tol = DEFAULT_TOLERANCES['fp32']
    np.testing.assert_array_equal(got.logits.argmax(1), ref.logits.argmax(1))
    assert np.abs(got.logits - ref.logits).max() <= tol.atol
    for head in card.modality_heads:
        assert np.abs(getattr(got, f'{head}_logits') - getattr(ref, f'{head}_logits')).max() <= tol.atol

    second = create_backend('tensorrt', card, enable_fp16=False).backend
    try:
        assert second.info['engine_cache'] == 'hit' and second.info['build_seconds'] is None
        assert second.info['engine_path'] == info['engine_path']
    finally:
        second.close()


@gpu_test
def test_fp16_engine_agrees_with_torch_within_documented_tolerance(card, data_root, engine_dir):
    audio, visual, _ = real_batch(card.preprocessing, data_root, num=8)
    result = compare_runtimes(card.verified_onnx(), card, [(audio, visual)], engine_dir=engine_dir)
    trt_results = {r.precision: r for r in result.results if r.runtime == 'tensorrt'}
    assert set(trt_results) == {'fp32', 'fp16'} and all(r.ran for r in trt_results.values()), result.summary()
    assert result.passed, result.summary()


@gpu_test
def test_force_update_and_explicit_engine_path(card, engine_dir, tmp_path):
    path = tmp_path / 'explicit' / 'misnet.engine'
    built = trt_backend.build_engine(card.verified_onnx(), path, fp16=True)
    assert not built.hit and path.is_file() and read_metadata(path)['key']['precision'] == 'fp16'
    again = trt_backend.build_engine(card.verified_onnx(), path, fp16=True)
    assert again.hit
    forced = trt_backend.build_engine(card.verified_onnx(), path, fp16=True, force_engine_update=True)
    assert not forced.hit and forced.reason == 'force_engine_update is set'
    backend = create_backend('tensorrt', card, engine_file_path=str(path)).backend
    try:
        assert backend.info['engine_cache'] == 'hit' and backend.info['engine_path'] == str(path)
        shapes = backend.input_shapes()
        audio, visual = np.zeros(shapes['audio'], np.float32), np.zeros(shapes['visual'], np.float32)
        with pytest.raises(ValueError, match='engine expects'):
            backend.infer(audio[:2], visual)
        assert np.isfinite(backend.infer(audio, visual).logits).all()
    finally:
        backend.close()
    # an fp32 request against the fp16 engine's metadata is a key change: rebuilt, not misused
    rebuilt = create_backend('tensorrt', card, engine_file_path=str(path), enable_fp16=False).backend
    try:
        assert rebuilt.info['engine_cache'] == 'miss' and 'precision' in rebuilt.info['engine_cache_reason']
    finally:
        rebuilt.close()


@gpu_test
def test_auto_prefers_tensorrt_on_a_gpu(card, engine_dir):
    choice = create_backend('auto', card)
    try:
        assert choice.backend.name == 'tensorrt' and choice.skipped == {}
    finally:
        choice.backend.close()
