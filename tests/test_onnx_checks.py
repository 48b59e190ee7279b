"""ONNX hygiene for TensorRT (no TensorRT needed) and torch/onnxruntime/TensorRT agreement reports.

The important case is the real exported ``misnet_tiny`` card (the model zoo's export path, BN statistics
calibrated on real windows); small hand-built graphs cover each failure the checker must catch.
"""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from av_snn_ros.backends import onnx_graph
from av_snn_ros.backends.onnx_graph import MIN_OPSET, check_onnx_for_tensorrt, fold_constants
from av_snn_ros.contract import input_shapes as expected_shapes
from av_snn_ros.model_card import ModelCard
from av_snn_ros.parity import DEFAULT_TOLERANCES, Tolerance, compare_runtimes
from av_snn_ros.tools import onnx_checks
from runtime_helpers import make_card, real_batch


def _tensorrt_runs_here() -> bool:
    try:
        import tensorrt  # noqa: F401
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.fixture(scope='module')
def card(tmp_path_factory) -> ModelCard:
    return ModelCard.load(make_card(tmp_path_factory))


# ---------------------------------------------------------------------------------- hand-built graphs

def _save(tmp_path, nodes, inputs, outputs, initializers=(), opset=MIN_OPSET, name='m.onnx', extra_opsets=()):
    graph = helper.make_graph(nodes, 'g', inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', opset), *extra_opsets])
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _vi(name, dims):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def _relu_model(tmp_path, dims=(4, 1, 8), **kwargs):
    return _save(tmp_path, [helper.make_node('Relu', ['x'], ['y'])], [_vi('x', list(dims))], [_vi('y', list(dims))],
                 **kwargs)


def test_clean_static_graph_passes(tmp_path):
    report = check_onnx_for_tensorrt(_relu_model(tmp_path))
    assert report.ok, report.summary()
    assert report.inputs == {'x': (4, 1, 8)} and report.opset == MIN_OPSET
    assert report.op_counts == {'Relu': 1} and report.foldable_nodes == 0 and report.shape_ops == 0
    assert report.warnings == []


def test_symbolic_dims_are_errors(tmp_path):
    report = check_onnx_for_tensorrt(_relu_model(tmp_path, dims=(4, 'batch', 8)))
    assert not report.ok
    assert any('input x has non-static shape' in e and 'batch' in e for e in report.errors)
    assert any('output y has non-static shape' in e for e in report.errors)


def test_old_opset_is_an_error_and_newer_than_trt86_a_warning(tmp_path):
    old = check_onnx_for_tensorrt(_relu_model(tmp_path, opset=13, name='old.onnx'))
    assert any('opset 13' in e for e in old.errors)
    new = check_onnx_for_tensorrt(_relu_model(tmp_path, opset=onnx_graph.TRT86_DOCUMENTED_OPSET + 1,
                                              name='new.onnx'))
    assert new.ok and any('TensorRT 8.6' in w for w in new.warnings)


@pytest.mark.parametrize('op,expect', [('Unique', 'outside the TensorRT-supported list'),
                                       ('NonZero', None)])
def test_operator_allow_list(tmp_path, op, expect):
    path = _save(tmp_path, [helper.make_node(op, ['x'], ['y'])], [_vi('x', [4])], [_vi('y', [4])])
    report = check_onnx_for_tensorrt(path)
    problems = [e for e in report.errors if 'TensorRT-supported' in e]
    if expect:
        assert problems and op in problems[0]
    else:
        assert not problems


def test_control_flow_and_custom_domains_are_errors(tmp_path):
    body = helper.make_graph([helper.make_node('Identity', ['c'], ['c_out'])], 'body',
                             [helper.make_tensor_value_info('i', TensorProto.INT64, []),
                              helper.make_tensor_value_info('c', TensorProto.BOOL, [])],
                             [helper.make_tensor_value_info('c_out', TensorProto.BOOL, [])])
    nodes = [helper.make_node('Loop', ['n', 'cond'], [], body=body),
             helper.make_node('Relu', ['x'], ['r']),
             helper.make_node('FancyOp', ['r'], ['y'], domain='com.example')]
    path = _save(tmp_path, nodes, [_vi('x', [4])], [_vi('y', [4])],
                 initializers=[helper.make_tensor('n', TensorProto.INT64, [], [3]),
                               helper.make_tensor('cond', TensorProto.BOOL, [], [True])],
                 extra_opsets=[helper.make_opsetid('com.example', 1)])
    report = check_onnx_for_tensorrt(path)
    assert any(e.startswith('Loop:') and 'static engine' in e for e in report.errors)
    assert any('com.example::FancyOp' in e for e in report.errors)


def test_constant_output_and_unused_input_are_flagged(tmp_path):
    """The shape a unimodal baseline exports: the missing head is a Constant, one input feeds nothing."""
    zeros = helper.make_tensor('z', TensorProto.FLOAT, [1, 2], [0.0, 0.0])
    nodes = [helper.make_node('ReduceMean', ['a'], ['logits'], axes=[0], keepdims=0),
             helper.make_node('Constant', [], ['visual_logits'], value=zeros)]
    path = _save(tmp_path, nodes, [_vi('a', [4, 1, 2]), _vi('visual', [4, 1, 2])],
                 [_vi('logits', [1, 2]), _vi('visual_logits', [1, 2])])
    report = check_onnx_for_tensorrt(path)
    assert report.ok, report.summary()
    assert any('visual_logits' in w and 'constant' in w for w in report.warnings)
    assert any('visual feed no node' in w for w in report.warnings)


def test_external_weights_are_an_error(tmp_path):
    weight = numpy_helper.from_array(np.ones(256, np.float32), name='w')   # raw data: can go external
    graph = helper.make_graph([helper.make_node('Add', ['x', 'w'], ['y'])], 'g', [_vi('x', [256])],
                              [_vi('y', [256])], initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', MIN_OPSET)])
    path = tmp_path / 'ext.onnx'
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location='ext.onnx.data', size_threshold=0)
    report = check_onnx_for_tensorrt(path)
    assert any('ext.onnx.data' in e and 'external_data=False' in e for e in report.errors)


def test_missing_and_garbage_files_are_reported_not_raised(tmp_path):
    assert not check_onnx_for_tensorrt(tmp_path / 'nope.onnx').ok
    bad = tmp_path / 'bad.onnx'
    bad.write_bytes(b'\x00not a protobuf' * 10)
    report = check_onnx_for_tensorrt(bad)
    assert not report.ok and report.errors


def test_torchscript_export_leaves_shape_arithmetic_that_folding_removes(tmp_path):
    """A real exporter artefact: flatten() traced as Shape->Slice->Concat->Reshape on static inputs."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, x):
            return self.conv(x.flatten(0, 1)).mean(0, keepdim=True)

    path = tmp_path / 'net.onnx'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')      # the TorchScript exporter's deprecation note
        torch.onnx.export(Net().eval(), (torch.zeros(4, 1, 1, 8, 8),), str(path), input_names=['x'],
                          output_names=['y'], opset_version=MIN_OPSET, dynamo=False, do_constant_folding=False)
    report = check_onnx_for_tensorrt(path)
    assert report.ok and report.shape_ops > 0 and report.foldable_nodes > 0
    assert report.folding and report.folding['shape_ops'] == 0 and report.folding['foldable_nodes'] == 0
    assert any('polygraphy surgeon sanitize' in w for w in report.warnings)
    strict = check_onnx_for_tensorrt(path, strict=True)
    assert not strict.ok and any('Shape/Size' in e for e in strict.errors)


# ------------------------------------------------------------------------- the real exported model

def test_real_exported_misnet_tiny_is_tensorrt_ready(card):
    """The model zoo's export of misnet_tiny: static window shapes, opset 17, only supported ops."""
    report = check_onnx_for_tensorrt(card.verified_onnx())
    assert report.ok, report.summary()
    audio, visual = expected_shapes(card.preprocessing, 1)
    assert report.inputs == {'audio': audio, 'visual': visual}
    assert report.outputs == {name: (1, card.num_classes) for name in ('logits', 'audio_logits', 'visual_logits')}
    assert report.opset == MIN_OPSET and report.external_data_files == []
    assert set(report.op_counts) <= onnx_graph.TENSORRT_SUPPORTED_OPS
    assert not set(report.op_counts) & (onnx_graph.CONTROL_FLOW_OPS | onnx_graph.RANDOM_OPS)
    if report.foldable_nodes or report.shape_ops:      # TorchScript export leaves shape arithmetic
        assert report.folding['shape_ops'] == 0 and report.folding['foldable_nodes'] == 0
        assert report.folding['node_count'] < report.node_count


def test_folding_the_real_model_keeps_its_outputs(card, data_root, tmp_path):
    import onnxruntime as ort
    audio, visual, _ = real_batch(card.preprocessing, data_root, num=1)
    folded = fold_constants(card.verified_onnx(), tmp_path / 'folded.onnx')
    feeds = {'audio': audio, 'visual': visual}
    before = ort.InferenceSession(str(card.verified_onnx()), providers=['CPUExecutionProvider']).run(None, feeds)
    after = ort.InferenceSession(str(folded), providers=['CPUExecutionProvider']).run(None, feeds)
    for b, a in zip(before, after):
        assert np.abs(a - b).max() <= DEFAULT_TOLERANCES['fp32'].atol
    assert check_onnx_for_tensorrt(folded, strict=True).ok
    assert {imp.domain for imp in onnx.load(str(folded)).opset_import} == {''}


def test_compare_runtimes_on_real_windows(card, data_root, tmp_path, monkeypatch):
    monkeypatch.setenv('AV_SNN_ENGINE_CACHE', str(tmp_path / 'engines'))   # where TensorRT runs: no ~/.cache
    audio, visual, _ = real_batch(card.preprocessing, data_root, num=2)
    result = compare_runtimes(card.verified_onnx(), card, [(audio, visual)])   # batch 2: run window by window
    ort_result = next(r for r in result.results if r.runtime == 'onnxruntime')
    assert ort_result.ran and ort_result.passed, result.summary()
    assert ort_result.argmax_agreement == 1.0
    assert {o.name for o in ort_result.outputs} == {'logits', *(f'{m}_logits' for m in card.modality_heads)}
    trt_results = [r for r in result.results if r.runtime == 'tensorrt']
    assert [r.precision for r in trt_results] == ['fp32', 'fp16']
    if not _tensorrt_runs_here():
        # never reported as passing when it did not run
        assert all(not r.ran and r.passed is None and r.skipped_reason for r in trt_results)
        assert 'NOT RUN' in result.summary()
    assert result.passed == all(r.passed for r in result.results if r.ran)
    assert result.to_dict()['passed'] == result.passed


def test_compare_runtimes_detects_a_different_model(card, data_root):
    """A torch model that is not the exported one must fail the comparison (the check can fail)."""
    import torch
    audio, visual, _ = real_batch(card.preprocessing, data_root, num=2)
    model = card.load_torch_model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    result = compare_runtimes(card.verified_onnx(), card, [(audio, visual)], model=model, runtimes=('onnxruntime',))
    assert not result.passed and result.results[0].ran and result.results[0].passed is False
    assert max(o.max_abs for o in result.results[0].outputs) > DEFAULT_TOLERANCES['fp32'].atol


def test_compare_runtimes_rejects_bad_inputs(card):
    with pytest.raises(ValueError, match='at least one'):
        compare_runtimes(card.verified_onnx(), card, [])
    with pytest.raises(ValueError, match='T, B, C, H, W'):
        compare_runtimes(card.verified_onnx(), card, [(np.zeros((4, 32, 32)), np.zeros((4, 32, 32)))])
    with pytest.raises(ValueError, match='unknown runtime'):
        audio, visual = (np.zeros(s, np.float32) for s in expected_shapes(card.preprocessing, 1))
        compare_runtimes(card.verified_onnx(), card, [(audio, visual)], runtimes=('openvino',))


def test_tolerances_are_documented_per_precision():
    assert DEFAULT_TOLERANCES['fp32'] == Tolerance(atol=1e-4)
    fp16 = DEFAULT_TOLERANCES['fp16']
    assert fp16.atol == 1e-2 and fp16.require_argmax_agreement


def test_cli_exit_codes(card, tmp_path, capsys):
    assert onnx_checks.main([str(card.verified_onnx())]) == 0
    assert 'OK for TensorRT' in capsys.readouterr().out
    assert onnx_checks.main([str(_relu_model(tmp_path, dims=(4, 'b', 8)))]) == 1
    assert 'NOT READY' in capsys.readouterr().out
