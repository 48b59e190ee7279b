"""``av-snn bench`` smoke test on a tiny configuration, plus the measurement helpers it is built on.

No timing is asserted anywhere (this machine is shared); the tests check that the bench runs, that the
report has its keys and internally consistent values, and that the helpers compute what they claim.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import numpy as np
import pytest
import torch

from av_snn_ros import parity, timing
from av_snn_ros.tools import bench, cpu_identity, node_bench, profiling
from av_snn_ros.models import native_kernels


def _args(tmp_path, **overrides) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    argv = ['--json', str(tmp_path / 'bench.json'), '--no-card', '--model', 'misnet_tiny', '--input-size', '32',
            '--quick', '--no-node', '--threads', '1', '--cuda', 'off']
    args = parser.parse_args(argv)
    for k, v in overrides.items():
        setattr(args, k, v)
    return args


def test_bench_writes_the_report(tmp_path, data_root, capsys) -> None:
    args = _args(tmp_path, data_root=data_root)
    assert bench.main(args) == 0
    report = json.loads(args.json.read_text())
    for key in ('machine', 'gemm', 'gemm_end', 'gemm_peak_gflops', 'models', 'settings', 'targets'):
        assert key in report
    cpu = report['machine']['cpu']            # every report says which CPU its numbers come from
    assert cpu['model_name'] and cpu['logical_cpus'] >= 1 and isinstance(cpu['flags'], list)
    assert len(report['machine']['loadavg_1_5_15']) == 3 and 'loadavg_end' in report['machine']
    assert report['gemm']['best_gflops'] > 0 and report['gemm']['size'] == profiling.GEMM_SIZE
    (m,) = report['models']
    assert m['model'] == 'misnet_tiny' and m['input']['kind'] == 'real'
    assert m['input']['audio_shape'] == [4, 1, 1, 32, 32]
    assert m['flops_per_call'] > 0 and m['flops_by_op']
    native_ok, why = native_kernels.available()
    # torch.compile is opt-in; 1 thread: no spin variant; the native kernels need a C compiler
    assert set(m['paths']) == {bench.EAGER, bench.FAST, bench.ORT} | ({bench.NATIVE} if native_ok else set())
    if native_ok:
        native = m['paths'][bench.NATIVE]
        assert native['info']['native_kernels'].startswith('on (')
        assert native['agreement_vs_eager']['argmax_equal'] and native['agreement_vs_eager']['max_abs_diff'] < 1e-5
    else:
        assert m['skipped'][bench.NATIVE].startswith('BackendUnavailable'), why
    assert bench.ORT_NOSPIN in m['skipped']
    assert bench.COMPILED in m['skipped']
    for name, entry in m['paths'].items():
        for key in ('p50_ms', 'p95_ms', 'p99_ms', 'speedup_vs_eager_p50', 'fraction_of_gemm_peak', 'build_s'):
            assert entry[key] is not None, (name, key)
        assert entry['min_ms'] <= entry['p50_ms'] <= entry['p95_ms'] <= entry['max_ms']
        assert entry['n'] >= bench.QUICK_MIN_ROUNDS
    assert m['paths'][bench.EAGER]['speedup_vs_eager_p50'] == pytest.approx(1.0)
    agree = m['paths'][bench.ORT]['agreement_vs_eager']
    assert agree['logits_nonzero']                               # BN calibration made the check non-vacuous
    assert agree['argmax_equal'] and agree['max_abs_diff'] < 1e-3
    fast = m['paths'][bench.FAST]['agreement_vs_eager']          # fast paths vs the reference maths
    assert fast['argmax_equal'] and fast['max_abs_diff'] < 1e-5
    assert 'reference' in m['paths'][bench.EAGER]['info']['computations']
    assert m['best_optimised_path'] == bench.ORT
    share = m['stage_profile_ms']['share']
    assert {'conv', 'neuron'} <= set(share) and sum(share.values()) == pytest.approx(1.0)
    assert m['top_ops'] and all(r['calls'] >= 1 for r in m['top_ops'])
    assert m['speedup_target_met'] == (m['best_speedup_vs_eager'] >= bench.SPEEDUP_TARGET)
    out = capsys.readouterr().out
    assert 'misnet_tiny' in out                                    # the summary table
    assert 'eager torch (>= 3x): ' + ('met' if m['speedup_target_met'] else 'NOT met') in out


def test_bench_rejects_bad_arguments(tmp_path) -> None:
    assert bench.main(_args(tmp_path, batch=0)) == 2
    assert not (tmp_path / 'bench.json').exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason='a CUDA device is present: the no-GPU error is not raised')
def test_bench_cuda_on_without_a_gpu_is_a_clear_error(tmp_path, capsys) -> None:
    assert bench.main(_args(tmp_path, cuda='on')) == 2
    assert 'sees no CUDA device' in capsys.readouterr().err
    assert not (tmp_path / 'bench.json').exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason=f'no CUDA device (torch {torch.__version__})')
def test_bench_times_the_gpu_backends_beside_the_cpu_target(tmp_path, data_root) -> None:
    report = bench.run(_args(tmp_path, data_root=data_root, cuda='on'))
    assert report['settings']['cuda'] and report['machine']['gpu']['name']
    (m,) = report['models']
    for name in (bench.TORCH_CUDA, bench.TORCH_CUDA_EAGER):
        gpu = m['paths'][name]
        assert gpu['info']['device'] == 'cuda' and gpu['fraction_of_gemm_peak'] is None
        agree = gpu['agreement_vs_eager']        # fp32 on the GPU (TF32 off) computes the CPU's spikes
        assert agree['logits_nonzero'] and agree['argmax_equal'] and agree['max_abs_diff'] < 1e-3, name
    assert m['paths'][bench.TORCH_CUDA]['info']['cuda_graph'] == 'on'       # replayed, not fallen back
    assert m['paths'][bench.TORCH_CUDA_EAGER]['info']['cuda_graph'].startswith('off')
    assert bench.TENSORRT in m['paths'] or 'TensorRT' in m['skipped'][bench.TENSORRT]
    assert m['best_optimised_path'] not in bench.GPU_PATHS         # the target stays the CPU's
    assert m['gpu_best_path'] in bench.GPU_PATHS and m['gpu_best_speedup_vs_eager'] > 0


def test_missing_card_is_reported_not_fatal(tmp_path, data_root) -> None:
    args = _args(tmp_path, no_card=False, card=tmp_path / 'nope' / 'card.yaml', model=['none'], data_root=data_root)
    report = bench.run(args)
    assert report['models'] == []
    assert 'no model card' in report['skipped']['card']


def test_agreement_uses_only_real_heads() -> None:
    ref = (np.array([[1.0, 2.0]]), np.array([[5.0, 0.0]]), np.zeros((1, 2)))
    other = (np.array([[1.0, 2.5]]), np.array([[0.0, 9.0]]), np.ones((1, 2)))
    assert parity.agreement(ref, other, ('visual',)) == {'argmax_equal': True, 'max_abs_diff': 1.0,
                                                       'logits_nonzero': True}
    assert parity.agreement(ref, other, ('audio', 'visual'))['max_abs_diff'] == 9.0


# ------------------------------------------------------------------------------------ profiling

def test_percentiles_and_stats() -> None:
    values = sorted([0.004, 0.001, 0.003, 0.002, 0.005])
    assert timing.percentile(values, 50) == 0.003
    assert timing.percentile(values, 0) == 0.001 and timing.percentile(values, 100) == 0.005
    assert timing.percentile([1.0, 2.0], 25) == pytest.approx(1.25)
    s = timing.latency_stats([0.001, 0.002, 0.003])
    assert (s.n, s.p50_ms, s.min_ms, s.max_ms) == (3, pytest.approx(2.0), pytest.approx(1.0), pytest.approx(3.0))
    with pytest.raises(ValueError):
        timing.percentile([], 50)
    with pytest.raises(ValueError):
        timing.percentile([1.0], 101)


def test_time_interleaved_round_robin() -> None:
    order: list[str] = []
    stats = timing.time_interleaved({'a': lambda: order.append('a'), 'b': lambda: order.append('b')},
                                       warmup=1, min_rounds=3, max_rounds=3, min_time_s=0.0)
    assert order == ['a', 'b'] * 4                               # one warm-up round, then 3 interleaved
    assert stats['a'].n == stats['b'].n == 3
    with pytest.raises(ValueError):
        timing.time_interleaved({})


def test_count_flops_of_a_conv_and_a_linear() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1, bias=False), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 8 * 8, 5))
    flops = profiling.count_flops(model, (torch.zeros(1, 2, 8, 8),))
    conv = 2 * (8 * 8 * 4) * (2 * 3 * 3)                         # 2 FLOP per multiply-add
    linear = 2 * 4 * 8 * 8 * 5
    assert flops['total'] == conv + linear


def test_gemm_measurement_is_positive_and_labelled() -> None:
    g = profiling.measure_gemm_gflops(size=256, repeats=2)
    assert g['size'] == 256 and g['threads'] == torch.get_num_threads()
    assert g['best_gflops'] >= g['median_gflops'] > 0


def test_stage_profile_attributes_time_to_categories() -> None:
    from av_snn_ros.models.registry import create_model
    model = create_model('misnet_tiny').eval()
    a, v = torch.zeros(4, 1, 1, 32, 32), torch.zeros(4, 1, 1, 32, 32)
    prof = profiling.stage_profile(model, (a, v), iterations=1)
    assert prof['total'] > 0
    assert prof['conv'] > 0 and prof['neuron'] > 0 and prof['pool'] > 0
    assert sum(prof['share'].values()) == pytest.approx(1.0)
    assert 'neuron' in profiling.format_stage_table(prof)
    for m in model.modules():                                    # hooks are removed afterwards
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_process_sampler_measures_this_process() -> None:
    sampler = node_bench.ProcessSampler(os.getpid(), period_s=0.05).start()
    t0 = time.monotonic()
    x = 0.0
    while time.monotonic() - t0 < 0.5:                          # keep one core busy for half a second
        x += sum(i * i for i in range(1000))
    sampler.stop()
    cpu = sampler.cpu_percent(t0, time.monotonic())
    assert cpu is not None and cpu > 10.0
    assert all(s[2] > 0 for s in sampler.samples)


@pytest.mark.parametrize('key', ['av_classifier', '/**/av_classifier', '/robot/av_classifier'])
def test_classifier_parameters_from_params_files(tmp_path, key) -> None:
    data = {'other_node': {'ros__parameters': {'x': 1}}, key: {'ros__parameters': {'window': {'hop_s': 0.25}}}}
    assert node_bench.classifier_parameters(data, tmp_path / 'p.yaml') == {'window': {'hop_s': 0.25}}
    with pytest.raises(ValueError, match='no av_classifier section'):
        node_bench.classifier_parameters({'other_node': {}}, tmp_path / 'p.yaml')


def test_shipped_params_files_have_a_classifier_section() -> None:
    import yaml

    from av_snn_ros.paths import config_dir
    for name in (node_bench.NODE_PARAMS_FILE, 'replay.yaml'):
        path = config_dir() / name
        params = node_bench.classifier_parameters(yaml.safe_load(path.read_text()), path)
        assert params['window']['hop_s'] > 0


# ------------------------------------------------------------------------------ reference by CPU

def _cpuinfo(tmp_path, model_name: str, vendor: str, model: int, flags: str) -> object:
    text = ''.join(f'processor\t: {i}\nvendor_id\t: {vendor}\ncpu family\t: {6 if vendor == "GenuineIntel" else 25}\n'
                   f'model\t\t: {model}\nmodel name\t: {model_name}\nflags\t\t: fpu sse4_2 avx avx2 {flags}\n\n'
                   for i in range(2))
    path = tmp_path / f'cpuinfo_{model}'
    path.write_text(text)
    return path


XEON_FLAGS = 'avx512f avx512_bf16 amx_tile amx_bf16 amx_int8'


def test_reference_lookup_takes_only_the_row_of_this_cpu(tmp_path) -> None:
    rows = cpu_identity.load_reference_timings()['rows']
    xeon = cpu_identity.cpu_identity(_cpuinfo(tmp_path, 'Intel(R) Xeon(R) Processor', 'GenuineIntel', 167, XEON_FLAGS),
                                     logical_cpus=2)
    assert xeon.family == 6 and xeon.model == 167 and 'amx_int8' in xeon.flags and 'fpu' not in xeon.flags
    assert cpu_identity.reference_for(xeon, rows)['p50_ms_batch1'] == [79, 80]
    epyc = cpu_identity.cpu_identity(_cpuinfo(tmp_path, 'AMD EPYC 7B13', 'AuthenticAMD', 1, ''), logical_cpus=2)
    assert cpu_identity.reference_for(epyc, rows)['p50_ms_batch1'] == [159, 166]
    # the machine kind with these flags reports model 207; the note's rule (name + flags + CPUs) matches it
    amx = cpu_identity.cpu_identity(_cpuinfo(tmp_path, 'Intel(R) Xeon(R) Processor', 'GenuineIntel', 207, XEON_FLAGS),
                                    logical_cpus=2)
    assert cpu_identity.reference_for(amx, rows)['p50_ms_batch1'] == [79, 80]
    # no AMX, more CPUs, an AVX-512 EPYC: no row is theirs
    no_amx = cpu_identity.cpu_identity(_cpuinfo(tmp_path, 'Intel(R) Xeon(R) Processor', 'GenuineIntel', 207,
                                                'avx512f avx512_bf16'), logical_cpus=2)
    assert cpu_identity.reference_for(no_amx, rows) is None
    assert cpu_identity.reference_for(dataclasses.replace(xeon, logical_cpus=4), rows) is None
    assert cpu_identity.reference_for(dataclasses.replace(epyc, flags=('avx512f',)), rows) is None


def test_no_ratio_without_a_reference_measured_on_this_cpu(tmp_path) -> None:
    shape = (4, 1, 1, 128, 128)
    foreign = cpu_identity.cpu_identity(_cpuinfo(tmp_path, 'Intel(R) Xeon(R) Processor', 'GenuineIntel', 207,
                                                 'avx512f'), logical_cpus=2)
    r = bench.reference_comparison('scmrl', shape, 2, 40.0, identity=foreign)
    assert r['speedup_vs_reference'] is None and r['target_met'] is None and r['reference_row'] is None
    text = bench._reference_text(r)
    assert text.startswith('no reference measured on this CPU') and 'model 207' in text and 'x the reference' not in text
    home = cpu_identity.cpu_identity(_cpuinfo(tmp_path, 'Intel(R) Xeon(R) Processor', 'GenuineIntel', 167,
                                              XEON_FLAGS), logical_cpus=2)
    r = bench.reference_comparison('scmrl', shape, 2, 40.0, identity=home)
    assert r['speedup_vs_reference'] == pytest.approx(79 / 40) and r['speedup_range'][1] == pytest.approx(80 / 40)
    assert r['comparable'] and r['target_met'] is False
    assert '1.98x the reference (79-80 ms/sample measured on this CPU kind' in bench._reference_text(r)
    r['gemm_check'] = bench.gemm_check(90.0, r['reference_row'])          # a loaded run: said beside the ratio
    assert not r['gemm_check']['consistent'] and 'WARNING: GEMM 90 GFLOP/s' in bench._reference_text(r)
    assert bench.gemm_check(350.0, r['reference_row'])['consistent']
    # the reference's thread budget is part of the comparison
    assert not bench.reference_comparison('scmrl', shape, 4, 40.0, identity=home)['comparable']
