"""torch and onnxruntime backends: parity on real data, auto fallback, clear errors for bad model files."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from av_snn_ros.backends import base
from av_snn_ros.backends.base import BackendUnavailable, create_backend
from av_snn_ros.model_card import ModelCard, ModelFileError, sha256_file
from runtime_helpers import make_card, real_batch

PARITY_ATOL = 1e-4


@pytest.fixture(scope='module')
def card(tmp_path_factory) -> ModelCard:
    return ModelCard.load(make_card(tmp_path_factory))


@pytest.fixture
def card_copy(card, tmp_path) -> ModelCard:
    """A private copy of the card folder that a test may damage."""
    dst = tmp_path / 'card'
    shutil.copytree(card.path.parent, dst)
    return ModelCard.load(dst / 'card.yaml')


def test_torch_and_onnxruntime_agree_on_real_windows(card, data_root):
    audio, visual, labels = real_batch(card.preprocessing, data_root, num=6)
    torch_be = create_backend('torch', card, threads=1).backend
    ort_be = create_backend('onnxruntime', card, threads=1).backend
    assert torch_be.name == 'torch' and ort_be.name == 'onnxruntime'
    t_out = torch_be.infer(audio, visual)           # batch of 6 windows
    o_out = ort_be.infer(audio, visual)             # the graph's batch is 1: run window by window
    assert t_out.logits.shape == o_out.logits.shape == (6, card.num_classes)
    np.testing.assert_array_equal(t_out.logits.argmax(1), o_out.logits.argmax(1))
    assert np.abs(t_out.logits - o_out.logits).max() < PARITY_ATOL
    for head in ('audio', 'visual'):
        t_head, o_head = getattr(t_out, f'{head}_logits'), getattr(o_out, f'{head}_logits')
        assert (t_head is None) == (o_head is None) == (head not in card.modality_heads)
        if t_head is not None:
            assert np.abs(t_head - o_head).max() < PARITY_ATOL
    # the outputs depend on the input (a constant output would make the parity check meaningless)
    assert np.ptp(t_out.logits, axis=0).max() > 1e-4


def test_auto_falls_back_to_onnxruntime_and_records_why(card):
    pytest.importorskip('onnxruntime')
    try:
        import tensorrt  # noqa: F401
        pytest.skip('TensorRT is installed here; the fallback path is not taken')
    except ImportError:
        pass
    choice = create_backend('auto', card, device='cpu')     # device cpu: no GPU contest, also on a GPU box
    assert choice.backend.name == 'onnxruntime'
    assert 'tensorrt' in choice.skipped and choice.skipped['tensorrt']
    assert choice.backend.info['fallback_from'] == choice.skipped
    assert 'auto_timing_ms' not in choice.backend.info


@pytest.mark.skipif(base.torch_cuda_available(), reason='a CUDA device is present')
def test_auto_without_an_nvidia_driver_never_imports_torch(card):
    # a CPU robot on onnxruntime must not pay torch's import (seconds, hundreds of MB) at start-up
    code = ('import sys; from av_snn_ros.model_card import ModelCard; '
            'from av_snn_ros.backends.base import create_backend; '
            f'c = create_backend("auto", ModelCard.load({str(card.path)!r})); '
            'print(c.backend.name, "torch" in sys.modules)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ['onnxruntime', 'False']


@pytest.mark.skipif(base.torch_cuda_available(), reason='a CUDA device is present')
def test_auto_keeps_onnxruntime_when_the_gpu_backend_cannot_start(card, monkeypatch):
    # a driver node exists but torch has no CUDA (CPU wheel, driver mismatch): recorded, not fatal
    monkeypatch.setattr(base, 'torch_cuda_available', lambda: True)
    choice = create_backend('auto', card)
    assert choice.backend.name == 'onnxruntime'
    assert 'CUDA is not available' in choice.skipped['torch (cuda)']


def test_time_backends_measures_each_backend_on_the_cards_window(card):
    # the start-up contest of auto on a GPU machine, here between two CPU backends
    backends = {'onnxruntime': create_backend('onnxruntime', card, threads=1).backend,
                'torch': create_backend('torch', card, threads=1, device='cpu').backend}
    timing = base.time_backends(backends, card.preprocessing, windows=3)
    assert set(timing) == set(backends) and all(0 < ms < 10_000 for ms in timing.values())


def test_auto_contest_keeps_the_faster_backend_and_records_both(card, monkeypatch):
    # the GPU contest's bookkeeping on a CPU machine: the torch backend on the CPU stands in for CUDA
    from av_snn_ros.backends.torch_backend import TorchBackend
    monkeypatch.setattr(base, 'torch_cuda_available', lambda: True)
    real_create = base._create
    monkeypatch.setattr(base, '_create', lambda name, c, opts: (
        TorchBackend(c, threads=opts.threads, device='cpu') if name == 'torch' else real_create(name, c, opts)))
    choice = create_backend('auto', card, threads=1)
    timing = choice.backend.info['auto_timing_ms']
    kept, dropped = sorted(timing, key=timing.get)
    assert choice.backend.name == kept.split()[0]
    assert choice.skipped[dropped].startswith('slower on this machine')
    assert choice.backend.info['fallback_from'] == choice.skipped


@pytest.mark.gpu
@pytest.mark.skipif(not base.torch_cuda_available(), reason='no CUDA device')
def test_auto_keeps_the_faster_of_onnxruntime_and_torch_on_the_gpu(card, data_root):
    choice = create_backend('auto', card)
    timing = choice.backend.info['auto_timing_ms']
    assert set(timing) == {'onnxruntime', 'torch (cuda)'} and min(timing.values()) > 0
    faster = min(timing, key=timing.get)
    assert choice.backend.name == faster.split()[0]
    loser = max(timing, key=timing.get)
    assert 'slower on this machine' in choice.skipped[loser]
    audio, visual, _ = real_batch(card.preprocessing, data_root, num=2)
    assert choice.backend.infer(audio, visual).logits.shape == (2, card.num_classes)


def test_pinned_backend_that_cannot_run_raises(card):
    try:
        import tensorrt  # noqa: F401
        pytest.skip('TensorRT is installed here')
    except ImportError:
        pass
    with pytest.raises(BackendUnavailable, match='(?i)tensorrt'):
        create_backend('tensorrt', card)
    with pytest.raises(ValueError, match='unknown backend'):
        create_backend('openvino', card)


def test_tampered_onnx_is_refused_even_under_auto(card_copy):
    onnx_path = card_copy.onnx
    data = bytearray(onnx_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx_path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match='does not match its card'):
        create_backend('onnxruntime', card_copy)
    with pytest.raises(ModelFileError, match='does not match its card'):
        create_backend('auto', card_copy)           # not a quiet fall-back to torch


def test_corrupt_onnx_with_matching_hash_gives_clear_error(card_copy):
    card_copy.onnx.write_bytes(b'not an onnx file')
    card_file = card_copy.path
    data = yaml.safe_load(card_file.read_text())
    data['onnx_sha256'] = sha256_file(card_copy.onnx)
    card_file.write_text(yaml.safe_dump(data))
    with pytest.raises(ModelFileError, match='onnxruntime cannot load'):
        create_backend('onnxruntime', ModelCard.load(card_file))


def test_missing_model_files_name_the_file(card_copy):
    onnx_path = card_copy.onnx
    onnx_path.unlink()
    with pytest.raises(ModelFileError, match='model file missing: .*model.onnx'):
        create_backend('onnxruntime', card_copy)
    card_copy.weights.unlink()
    with pytest.raises(ModelFileError, match='model file missing'):
        ModelCard.load(card_copy.path)
    with pytest.raises(ModelFileError, match='model file missing'):
        create_backend('auto', ModelCard.load(card_copy.path, verify=False))


def test_wrong_input_shape_is_a_value_error(card):
    backend = create_backend('onnxruntime', card).backend
    audio = np.zeros((card.preprocessing.timesteps, 1, 1, 8, 8), np.float32)
    visual = np.zeros((card.preprocessing.timesteps, 1, 1, 8, 8), np.float32)
    with pytest.raises(ValueError, match='do not match the model card'):
        backend.infer(audio, visual)


@pytest.mark.gpu
@pytest.mark.skipif(not base.torch_cuda_available(), reason='no CUDA device')
def test_torch_cuda_graph_replays_each_new_window_like_eager(card, data_root):
    from av_snn_ros.backends.torch_backend import TorchBackend
    audio, visual, _ = real_batch(card.preprocessing, data_root, num=3)
    graph = TorchBackend(card, device='cuda')
    eager = TorchBackend(card, device='cuda', cuda_graph=False)
    cpu = TorchBackend(card, device='cpu')
    outs = []
    for i in range(3):                       # one window per call: the static input is refilled each time
        a, v = audio[:, i:i + 1], visual[:, i:i + 1]
        g, e, c = (b.infer(a, v).logits for b in (graph, eager, cpu))
        np.testing.assert_allclose(g, e, atol=1e-5)
        np.testing.assert_array_equal(g.argmax(1), c.argmax(1))
        outs.append(g)
    assert graph.info['cuda_graph'] == 'on' and len(graph._graphs) == 1
    assert not np.array_equal(outs[0], outs[1]) or not np.array_equal(outs[1], outs[2])   # not a stale replay
    calls = []
    handle = graph.model.register_forward_pre_hook(lambda *_: calls.append(1))   # as the energy meter does
    np.testing.assert_allclose(graph.infer(audio[:, :1], visual[:, :1]).logits, outs[0], atol=1e-5)
    assert calls == [1]                      # hooks attached: the forward really ran (eagerly)
    handle.remove()


# ------------------------------------------------------------------------------------------ options

def test_each_backend_gets_only_its_own_options_and_a_typo_is_rejected(card):
    from av_snn_ros.backends.onnxruntime_backend import OnnxRuntimeOptions
    from av_snn_ros.backends.torch_backend import TorchOptions
    parsed = base.parse_options({'threads': 2, 'device': 'cpu', 'enable_fp16': False})
    assert parsed['torch'] == TorchOptions(threads=2, device='cpu')
    assert parsed['onnxruntime'] == OnnxRuntimeOptions(threads=2)
    assert parsed['tensorrt'].enable_fp16 is False
    # a misspelt option used to be swallowed by every factory's **_options; now it names the valid ones
    with pytest.raises(ValueError, match=r'unknown backend option\(s\) thread;.*onnxruntime: threads'):
        create_backend('onnxruntime', card, thread=2)
    with pytest.raises(ValueError, match="threads: '2'"):
        create_backend('torch', card, threads='2')
    with pytest.raises(ValueError, match='torch device'):
        create_backend('auto', card, device='gpu')             # a bad value: a config error, even under auto


def test_onnxruntime_spinning_option_reaches_the_session(card):
    backend = create_backend('onnxruntime', card, threads=2, allow_spinning=False).backend
    assert backend.info['allow_spinning'] is False and backend.info['threads'] == 2
    config = backend.session.get_session_options().get_session_config_entry('session.intra_op.allow_spinning')
    assert config == '0'


def test_node_backend_parameters_are_the_backends_options():
    """The node's backend.* parameters are generated from the options dataclasses: same names, defaults
    (None shown as its 'unset' value) and validation, so adding an option to a backend adds the parameter."""
    import dataclasses

    from av_snn_ros.ros.params import param_specs, read_settings
    specs = {s.name: s for s in param_specs() if s.name.startswith('backend.') and s.name != 'backend.name'}
    exposed = {}
    for name in ('torch', 'onnxruntime', 'tensorrt'):
        for f in dataclasses.fields(base.options_class(name)):
            if f.metadata.get('parameter'):
                exposed[f'backend.{f.name}'] = f.metadata['unset'] if f.default is None else f.default
    assert {name: spec.default for name, spec in specs.items()} == exposed
    assert specs['backend.device'].choices == ('auto', 'cpu', 'cuda')
    # unset values stay out of the options; everything the node passes is accepted by create_backend
    options = read_settings({'model.card': 'card.yaml', 'backend.threads': 0, 'backend.allow_spinning': False}).backend.options
    assert 'threads' not in options and 'model_file_path' not in options and options['allow_spinning'] is False
    assert base.parse_options(options)['onnxruntime'].allow_spinning is False
