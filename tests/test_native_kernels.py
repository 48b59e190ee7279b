"""The native CPU kernels: event-driven convolution, one-pass neurons, their use in models and backends.

The kernels are compiled from C on first use; without a C compiler these tests skip (and the backend
option fails start-up, tested below with a compiler that does not exist).
"""
from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from av_snn_ros.tools.export import real_window
from av_snn_ros.models import native_kernels
from av_snn_ros.models.neurons import LIFNode, MLIFNode
from runtime_helpers import calibrated_on_real_windows, make_card

AVAILABLE, WHY = native_kernels.available()
needs_kernels = pytest.mark.skipif(not AVAILABLE, reason=f'native kernels unavailable: {WHY}')


@pytest.fixture(scope='module')
def default_card(tmp_path_factory):
    from av_snn_ros.model_card import ModelCard
    return ModelCard.load(make_card(tmp_path_factory))


def _spy(name: str):
    """Patch ``native_kernels.<name>`` with a wrapper that records what each call returned."""
    real = getattr(native_kernels, name)
    results = []

    def wrapper(*args, **kwargs):
        results.append(real(*args, **kwargs))
        return results[-1]
    return mock.patch.object(native_kernels, name, wrapper), results


def _sparse(shape, density, gen, values=False):
    x = (torch.rand(shape, generator=gen) < density).float()
    if values:      # any values must work (the stems feed real numbers); spikes are the fast case
        x = x * torch.randn(shape, generator=gen)
    return x


@needs_kernels
@pytest.mark.parametrize('cin,cout,k,values', [(16, 83, 3, False), (24, 64, 5, True), (16, 16, 1, True)])
def test_event_driven_conv_equals_dense_conv(cin, cout, k, values):
    """Every output-channel branch (blocks of 64, of 16, single channels), borders, odd sizes, batch > 1."""
    gen = torch.Generator().manual_seed(cin + cout + k)
    x = _sparse((3, cin, 9, 7), 0.15, gen, values).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(cout, cin, k, k, generator=gen)
    bias = torch.randn(cout, generator=gen)
    got = native_kernels.spike_conv2d(x, native_kernels.conv_weight_layout(weight), bias, max_density=1.0)
    expected = F.conv2d(x, weight, bias, padding=k // 2)
    assert got is not None and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@needs_kernels
def test_event_driven_conv_declines_dense_inputs_and_other_layouts():
    gen = torch.Generator().manual_seed(0)
    weight = native_kernels.conv_weight_layout(torch.randn(16, 16, 3, 3, generator=gen))
    bias = torch.zeros(16)
    dense = _sparse((1, 16, 8, 8), 0.6, gen).contiguous(memory_format=torch.channels_last)
    assert native_kernels.spike_conv2d(dense, weight, bias) is None            # > DENSE_ABOVE non-zero
    sparse_nchw = _sparse((1, 16, 8, 8), 0.05, gen)                            # NCHW: not its layout
    assert native_kernels.spike_conv2d(sparse_nchw, weight, bias) is None
    assert native_kernels.spike_conv2d(sparse_nchw.double().contiguous(memory_format=torch.channels_last),
                                       weight, bias) is None


def _native_and_torch(neuron, *inputs):
    with torch.inference_mode():
        neuron.reset()
        reference = neuron(*inputs)
        ref_state = {k: v.clone() for k, v in neuron._memories.items()}
        neuron.reset()
        with native_kernels.enabled():
            native = neuron(*inputs)
        return reference, ref_state, native, dict(neuron._memories)


@needs_kernels
@pytest.mark.parametrize('tau,decay_input,v_reset', [(2.0, False, None), (2.0, True, 0.0), (3.0, True, 0.0),
                                                      (3.0, False, None)])
@pytest.mark.parametrize('channels_last', [False, True])
def test_one_pass_lif_is_bitwise_the_torch_fast_path(tau, decay_input, v_reset, channels_last):
    """tau = 3: the decay 2/3 is inexact, so the charge must round like torch's fused multiply-add."""
    gen = torch.Generator().manual_seed(1)
    x = 1.5 * torch.randn(4, 2, 8, 5, 6, generator=gen)
    if channels_last:
        x = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (4, 2))
    lif = LIFNode(tau=tau, decay_input=decay_input, v_reset=v_reset)
    patch, results = _spy('lif_multistep')
    with patch:
        reference, ref_state, native, state = _native_and_torch(lif, x)
    assert len(results) == 1 and results[0] is not None      # the kernel did run
    assert torch.equal(native, reference) and 0 < reference.mean() < 1
    assert torch.equal(state['v'], ref_state['v'])


@needs_kernels
def test_neurons_fall_back_to_torch_for_layouts_the_kernels_do_not_read():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 2, 6, 5, generator=gen).transpose(2, 3)       # steps are not dense blocks
    assert native_kernels.lif_multistep(x, 0.5, 1.0, None) is None
    lif = LIFNode(tau=2.0)
    reference, _, native, _ = _native_and_torch(lif, x)               # the torch path, same values
    assert torch.equal(native, reference)


@needs_kernels
def test_one_pass_mlif_is_bitwise_the_torch_fast_path():
    gen = torch.Generator().manual_seed(2)
    c_a, c_v = (2 * torch.randn(4, 1, 8, 6, 6, generator=gen) for _ in range(2))
    mlif = MLIFNode(tau=2.0, alpha_init=0.7)
    with torch.no_grad():
        mlif.alpha_v.fill_(1.3)
    patch, results = _spy('mlif_multistep')
    with patch:
        reference, ref_state, native, state = _native_and_torch(mlif, c_a, c_v)
    assert len(results) == 1 and results[0] is not None
    for r, n in zip(reference, native):
        assert torch.equal(n, r) and 0 < r.mean() < 1
    for key in ('v_a', 'v_v'):
        assert torch.equal(state[key], ref_state[key])


@needs_kernels
@pytest.mark.parametrize('name', ['misnet_tiny', 'scmrl_tiny'])
def test_models_with_native_kernels_give_the_torch_outputs(name, data_root):
    """Real windows through calibrated BN (spikes at every layer): the kernels run and change nothing."""
    model, audio, visual = calibrated_on_real_windows(name, data_root, batch=2)
    conv_patch, convs = _spy('spike_conv2d')
    lif_patch, lifs = _spy('lif_multistep')
    with torch.inference_mode():
        reference = model(audio, visual)
        with conv_patch, lif_patch, native_kernels.enabled():
            native = model(audio, visual)
    if name == 'misnet_tiny':      # event-driven where the spikes are sparse enough, dense elsewhere
        assert any(r is not None for r in convs)
    assert lifs and all(r is not None for r in lifs)
    for r, n in zip(reference, native):
        torch.testing.assert_close(n, r, rtol=1e-5, atol=1e-5)
        assert torch.equal(n.argmax(1), r.argmax(1))
    assert torch.count_nonzero(native[0]) > 0


@needs_kernels
def test_energy_estimate_is_the_same_with_native_kernels(data_root):
    """The meter counts the architecture's MACs (training-time maths), not what the kernels skip."""
    from av_snn_ros.models.energy import estimate_energy
    model, audio, visual = calibrated_on_real_windows('misnet_tiny', data_root, batch=1)
    plain = estimate_energy(model, audio, visual)
    with native_kernels.enabled():
        native = estimate_energy(model, audio, visual)
    assert native.total_mj == pytest.approx(plain.total_mj, rel=1e-9) and plain.total_mj > 0
    assert [(l.name, l.flops, l.rate) for l in native.per_layer] == [(l.name, l.flops, l.rate) for l in plain.per_layer]


@needs_kernels
def test_torch_backend_option_runs_the_kernels_on_the_shipped_card(default_card, data_root):
    from av_snn_ros.backends.torch_backend import TorchBackend
    audio, visual = real_window(default_card.preprocessing, data_root, batch=1)
    plain = TorchBackend(default_card, device='cpu')
    native = TorchBackend(default_card, device='cpu', native_kernels=True)
    assert plain.info['native_kernels'] == 'off' and native.info['native_kernels'].startswith('on (')
    assert plain.info['heap'].startswith('glibc keeps freed memory')      # backends/heap.py, on glibc
    patch, results = _spy('lif_multistep')
    with patch:
        got = native.infer(audio, visual)
    assert results and all(r is not None for r in results)
    np.testing.assert_allclose(got.logits, plain.infer(audio, visual).logits, rtol=1e-5, atol=1e-5)
    assert not native_kernels.active()          # the option is scoped to the backend's own calls


def test_missing_compiler_is_a_clear_start_up_error(default_card, tmp_path, monkeypatch):
    from av_snn_ros.backends.base import BackendUnavailable
    from av_snn_ros.backends.torch_backend import TorchBackend
    monkeypatch.setattr(native_kernels, '_lib', None)
    monkeypatch.setattr(native_kernels, '_error', None)
    monkeypatch.setenv('AV_SNN_KERNEL_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setenv('CC', str(tmp_path / 'no-such-cc'))
    with pytest.raises(BackendUnavailable, match='native_kernels requested but unavailable.*no-such-cc'):
        TorchBackend(default_card, device='cpu', native_kernels=True)
    with pytest.raises(native_kernels.NativeKernelsUnavailable):   # remembered, not retried per window
        native_kernels.load()
    assert TorchBackend(default_card, device='cpu').info['native_kernels'] == 'off'   # the option alone


@needs_kernels
def test_compiled_library_is_cached_by_source_compiler_and_cpu(tmp_path, monkeypatch):
    monkeypatch.setattr(native_kernels, '_lib', None)
    monkeypatch.setattr(native_kernels, '_error', None)
    monkeypatch.setenv('AV_SNN_KERNEL_CACHE', str(tmp_path))
    lib = native_kernels.load()
    built = sorted(tmp_path.glob('spiking_kernels-*.so'))
    assert [p.name for p in built] == [native_kernels.library_path(native_kernels._compiler()).name]
    assert lib._name == str(built[0]) and not list(tmp_path.glob('*.tmp*'))
    mtime = built[0].stat().st_mtime_ns
    monkeypatch.setattr(native_kernels, '_lib', None)
    native_kernels.load()                                   # found in the cache: not compiled again
    assert built[0].stat().st_mtime_ns == mtime


@needs_kernels
def test_compiler_without_openmp_still_builds_single_threaded_kernels(tmp_path, monkeypatch):
    """A compiler that rejects -fopenmp (clang without libomp): the retry without it must load and run."""
    import os
    import shutil
    real_cc = native_kernels._compiler()
    fake = tmp_path / 'cc-no-openmp'
    fake.write_text(f'#!/bin/sh\ncase "$*" in *-fopenmp*) echo "unsupported option -fopenmp" >&2; exit 1;; esac\n'
                    f'exec {shutil.which(real_cc) or real_cc} "$@"\n')
    fake.chmod(0o755)
    monkeypatch.setattr(native_kernels, '_lib', None)
    monkeypatch.setattr(native_kernels, '_error', None)
    monkeypatch.setenv('AV_SNN_KERNEL_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setenv('CC', str(fake))
    lib = native_kernels.load()
    assert os.path.dirname(lib._name) == str(tmp_path / 'cache')
    gen = torch.Generator().manual_seed(4)
    x = _sparse((2, 16, 6, 6), 0.2, gen).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(32, 16, 3, 3, generator=gen), torch.randn(32, generator=gen)
    got = native_kernels.spike_conv2d(x, native_kernels.conv_weight_layout(weight), bias, max_density=1.0)
    torch.testing.assert_close(got, F.conv2d(x, weight, bias, padding=1), rtol=1e-5, atol=1e-5)
