"""ONNX export: torch/onnxruntime parity on real windows, model cards, the ``av-snn export`` CLI."""
import argparse
import importlib.util
import shutil

import numpy as np
import pytest
import torch
import yaml

from av_snn_ros import contract, parity
from av_snn_ros.backends.onnx_graph import check_onnx_for_tensorrt
from av_snn_ros.model_card import ModelCard
from av_snn_ros.models import calibrate_batchnorm, create_model
from av_snn_ros.preprocessing import PreprocessConfig
from av_snn_ros.tools import export

DIGITS = [str(d) for d in range(10)]
PARITY_ATOL = 1e-4
# 128x128 exports of MISNet-XS / S-CMRL take minutes on 2 busy cores; the graph is the same at 32x32
# (sizes only change tensor shapes), so parity is checked there, with each model's full width.
PARITY_SIZE = (32, 32)


def _calibrated(name, data_root, **overrides):
    torch.manual_seed(0)
    model = create_model(name, **overrides)
    pre = export.preprocess_config_for(model)
    audio, visual = export.real_window(pre, data_root, batch=10)      # one window per digit
    calibrate_batchnorm(model, [(torch.from_numpy(audio), torch.from_numpy(visual))])
    return model, pre


def _run_cli(argv):
    parser = argparse.ArgumentParser()
    export.add_arguments(parser)
    return export.main(parser.parse_args(argv))


@pytest.mark.parametrize('name', ['misnet_xs', 'scmrl'])
def test_onnx_export_matches_torch_on_a_real_window(name, data_root, tmp_path):
    model, pre = _calibrated(name, data_root, input_size=PARITY_SIZE)
    path = export.export_onnx(model, pre, tmp_path / 'model.onnx')
    audio, visual = export.real_window(pre, data_root, batch=1)
    with torch.no_grad():
        logits = model(torch.from_numpy(audio), torch.from_numpy(visual))[0]
    assert torch.count_nonzero(logits) > 0            # spikes reach the head: a meaningful comparison
    result = parity.compare_onnx(path, model, audio, visual)
    assert result['argmax_equal'] and result['max_abs_diff'] < PARITY_ATOL and result['passed'], result


@pytest.fixture(scope='module')
def tiny_card(tmp_path_factory, data_root):
    model, pre = _calibrated('misnet_tiny', data_root)
    out = tmp_path_factory.mktemp('card')
    path = export.write_model_card('misnet_tiny', out, DIGITS, pre, state_dict=model.state_dict(),
                                   extra={'metrics': {'test_accuracy': 0.5}, 'description': 'test card'})
    return path, model, pre


def test_write_model_card_round_trip(tiny_card, data_root):
    path, model, pre = tiny_card
    card = ModelCard.load(path)
    assert card.model == 'misnet_tiny' and card.labels == DIGITS and card.preprocessing == pre
    assert card.modality_heads == ('audio', 'visual') and card.extra['metrics'] == {'test_accuracy': 0.5}
    loaded = card.load_torch_model()
    audio, visual = export.real_window(pre, data_root, batch=2)
    with torch.no_grad():
        for a, b in zip(model(torch.from_numpy(audio), torch.from_numpy(visual)),
                        loaded(torch.from_numpy(audio), torch.from_numpy(visual))):
            assert torch.equal(a, b)
    result = parity.compare_onnx(card.verified_onnx(), loaded, audio[:, :1], visual[:, :1])
    assert result['argmax_equal'] and result['max_abs_diff'] < PARITY_ATOL and result['passed']


def test_write_model_card_rejects_inconsistent_requests(tmp_path):
    pre = PreprocessConfig()
    with pytest.raises(ValueError, match='do not fit'):
        export.write_model_card('misnet_xs', tmp_path, ['a', 'b'], pre)        # 128x128 RGB vs 32x32 gray
    with pytest.raises(ValueError, match='num_classes=3 but 2 labels'):
        export.write_model_card('misnet_tiny', tmp_path, ['a', 'b'], pre, model_args={'num_classes': 3})
    with pytest.raises(ValueError, match='unsupported extra card key'):
        export.write_model_card('misnet_tiny', tmp_path, ['a', 'b'], pre, extra={'weights': 'x.pt'})


def test_cli_export_card_updates_only_the_onnx_keys(tiny_card, tmp_path, capsys):
    src, _, _ = tiny_card
    card_dir = tmp_path / 'card'
    shutil.copytree(src.parent, card_dir)
    before = yaml.safe_load((card_dir / 'card.yaml').read_text())
    assert _run_cli(['--card', str(card_dir), '--out', str(tmp_path / 'onnx')]) == 0
    assert 'argmax equal: True -> OK' in capsys.readouterr().out
    after = yaml.safe_load((card_dir / 'card.yaml').read_text())
    assert after['onnx'] == '../onnx/model.onnx'
    assert after['onnx_sha256'] == ModelCard.load(card_dir).onnx_sha256
    assert {k: v for k, v in after.items() if not k.startswith('onnx')} == \
        {k: v for k, v in before.items() if not k.startswith('onnx')}
    ModelCard.load(card_dir).verified_onnx()


def test_cli_fresh_unimodal_model_keeps_both_onnx_inputs(tmp_path, capsys):
    import onnxruntime as ort
    assert _run_cli(['--model', 'audio_tiny', '--out', str(tmp_path)]) == 0
    assert 'OK' in capsys.readouterr().out
    card = ModelCard.load(tmp_path)
    assert card.modality_heads == ('audio',)
    session = ort.InferenceSession(str(card.verified_onnx()), providers=['CPUExecutionProvider'])
    assert [i.name for i in session.get_inputs()] == ['audio', 'visual']
    assert [o.name for o in session.get_outputs()] == ['logits', 'audio_logits', 'visual_logits']
    shapes = contract.input_shapes(card.preprocessing)
    outs = session.run(None, {'audio': np.zeros(shapes[0], np.float32), 'visual': np.zeros(shapes[1], np.float32)})
    assert outs[0].shape == (1, 10)
    assert not np.any(outs[2])                                   # the missing head reads as zeros ...
    report = check_onnx_for_tensorrt(card.verified_onnx(), strict=True)
    assert report.ok, report.summary()                           # ... folded, hashed as folded
    assert not any('constant' in w for w in report.warnings)     # ... and is not a constant output


@pytest.mark.skipif(importlib.util.find_spec('tensorrt') is not None, reason='TensorRT is installed here')
def test_cli_engine_fails_clearly_without_tensorrt(tiny_card, tmp_path, capsys):
    src, _, _ = tiny_card
    shutil.copytree(src.parent, tmp_path / 'card')
    assert _run_cli(['--card', str(tmp_path / 'card'), '--engine']) == 1
    assert 'TensorRT' in capsys.readouterr().out


def test_cli_reports_a_bad_card(tmp_path, capsys):
    (tmp_path / 'card.yaml').write_text('name: x\n')
    assert _run_cli(['--card', str(tmp_path)]) == 1
    assert 'lacks required key' in capsys.readouterr().out
