"""Training loop: recipes, learning-rate schedule, bit-identical resume, train -> card -> eval on real data.

The runs use a shrunken MISNet (width 1/8, one cell per stage) on a few batches of the real AV digits
data, so the whole file stays fast on two CPU cores while exercising the real code paths.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch

from av_snn_training import cli_eval, cli_train
from av_snn_training.recipe import TrainConfig, check_resume_compatible, load_recipe, parse_overrides
from av_snn_training.trainer import LAST_CHECKPOINT, load_checkpoint, lr_at, steps_per_epoch, train

RECIPES = sorted((Path(__file__).resolve().parent.parent / 'training' / 'recipes').glob('*.yaml'))

# A small but real run: 2 epochs x 2 steps of 8 samples, validation/test on 2 batches of 8.
TINY = dict(model='misnet_tiny', model_args={'width': 0.125, 'cells': [1, 1, 0]}, dataset='av_digits',
            epochs=2, batch_size=8, train_num=32, max_batches_per_epoch=2, max_eval_batches=2,
            eval_batch_size=8, optimizer='sgd', lr=0.05, lr_min=0.001, warmup_epochs=0.5,
            torch_threads=1, seed=3)


# Long enough to learn: 12 steps of 16 samples per epoch, 8 epochs, validation on 64 samples. Measured
# (seed 0, Xeon 2 cores): val accuracy 0.12 -> 0.59 (best 0.64), val loss 0.205 -> 0.134, test 0.47;
# ~20 s of training on an idle machine. Chance is 0.1.
LEARNING = dict(model='misnet_tiny', model_args={'width': 0.125, 'cells': [1, 1, 0]}, dataset='av_digits',
                epochs=8, batch_size=16, train_num=192, max_eval_batches=4, eval_batch_size=16,
                optimizer='adamw', lr=5e-3, lr_min=1e-4, torch_threads=2, seed=0, cache_samples=True)
CHANCE = 0.1


def tiny_config(out_dir: Path, **changes) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, 'out_dir': str(out_dir), **changes})


@pytest.fixture(scope='module')
def finished_run(data_root, tmp_path_factory) -> tuple[TrainConfig, dict]:
    """One complete tiny run (shared by the end-to-end and resume tests)."""
    cfg = tiny_config(tmp_path_factory.mktemp('straight'))
    return cfg, train(cfg, data_root=data_root)


# ------------------------------------------------------------------------------------------- recipes

@pytest.mark.parametrize('path', RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipes_load_and_name_registered_models(path):
    from av_snn_ros.models.registry import list_models
    cfg = load_recipe(path)
    assert cfg.model in list_models()
    assert cfg.preprocess_config() is not None


def test_recipes_exist_for_the_shipped_and_paper_models():
    names = {p.stem for p in RECIPES}
    assert {'digits_misnet_tiny', 'digits_concat_tiny', 'digits_audio_tiny', 'digits_visual_tiny'} <= names
    assert any(load_recipe(p).optimizer == 'adamw' and load_recipe(p).loss == 'scmrl' for p in RECIPES)


def test_recipe_rejects_unknown_keys_and_wrong_types(tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text('model: misnet_tiny\nlearning_rate: 0.1\n')
    with pytest.raises(ValueError, match='learning_rate'):
        load_recipe(bad)
    good = tmp_path / 'good.yaml'
    good.write_text('model: misnet_tiny\nepochs: 3\n')
    with pytest.raises(ValueError, match='epochs'):
        load_recipe(good, parse_overrides(['epochs=ten']))
    with pytest.raises(ValueError, match='optimizer'):
        load_recipe(good, {'optimizer': 'lbfgs'})
    with pytest.raises(ValueError, match='preprocessing'):
        load_recipe(good, {'preprocessing': {'timesteps': 0}})
    cfg = load_recipe(good, parse_overrides(['lr=0.5', 'model_args={width: 0.5}', 'grad_clip=null']))
    assert (cfg.epochs, cfg.lr, cfg.model_args, cfg.grad_clip) == (3, 0.5, {'width': 0.5}, None)


@pytest.mark.parametrize('item', ['lr', '=3', 'a=[1,'])
def test_malformed_overrides_are_errors(item):
    with pytest.raises(ValueError):
        parse_overrides([item])


def test_resume_refuses_structural_changes(tmp_path):
    saved = tiny_config(tmp_path)
    assert check_resume_compatible(saved, saved.replace(epochs=5, num_workers=2)).epochs == 5
    with pytest.raises(ValueError, match='batch_size'):
        check_resume_compatible(saved, saved.replace(batch_size=16))


# -------------------------------------------------------------------------------------- lr schedule

def test_lr_schedule_warmup_cosine_floor():
    cfg = TrainConfig(epochs=4, lr=0.1, lr_min=0.001, warmup_epochs=1, lr_schedule='cosine')
    lrs = [lr_at(s, cfg, 10) for s in range(40)]
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1)          # linear warm-up
    assert lrs[10] == pytest.approx(0.1) and lrs[-1] == pytest.approx(0.001)       # cosine to the floor
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[10 + 29 // 2] == pytest.approx(0.001 + 0.5 * 0.099 * (1 + math.cos(math.pi * 14 / 29)))


def test_lr_schedule_step_and_batch_scaling():
    step = TrainConfig(epochs=6, lr=0.1, lr_min=0.002, lr_schedule='step', lr_step_epochs=2, lr_step_gamma=0.1)
    assert [lr_at(e * 5, step, 5) for e in range(6)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.002, 0.002])
    scaled = TrainConfig(optimizer='adamw', lr=5e-3, lr_batch_ref=1024, batch_size=128, lr_schedule='constant')
    assert lr_at(0, scaled, 3) == pytest.approx(5e-3 * 128 / 1024)
    with pytest.raises(ValueError):
        lr_at(-1, scaled, 3)


def test_steps_per_epoch_uses_whole_global_batches():
    cfg = TrainConfig(batch_size=32)
    assert steps_per_epoch(127, cfg) == 3
    assert steps_per_epoch(127, cfg.replace(max_batches_per_epoch=2)) == 2
    with pytest.raises(ValueError, match='fewer than one batch'):
        steps_per_epoch(31, cfg)


# ------------------------------------------------------------------------------------ real training

def test_resume_is_bit_identical(finished_run, data_root, tmp_path):
    cfg, _ = finished_run
    resumed = tiny_config(tmp_path)
    partial = train(resumed, data_root=data_root, stop_after_epochs=1)
    assert partial['finished'] is False and len(partial['history']) == 1
    assert load_checkpoint(tmp_path / LAST_CHECKPOINT)['epoch'] == 1
    train(resumed, data_root=data_root, resume=True)

    a = load_checkpoint(Path(cfg.out_dir) / LAST_CHECKPOINT)
    b = load_checkpoint(tmp_path / LAST_CHECKPOINT)
    assert a['epoch'] == b['epoch'] == 2
    assert a['model'].keys() == b['model'].keys()
    for key in a['model']:
        assert torch.equal(a['model'][key], b['model'][key]), key
    for sa, sb in zip(a['optimizer']['state'].values(), b['optimizer']['state'].values()):
        assert torch.equal(sa['momentum_buffer'], sb['momentum_buffer'])
    strip = [{k: v for k, v in h.items() if k != 'time_s'} for h in a['history']]
    assert strip == [{k: v for k, v in h.items() if k != 'time_s'} for h in b['history']]
    assert torch.equal(a['rng'][0]['torch'], b['rng'][0]['torch'])


def test_train_writes_metrics_plots_and_a_loadable_card(finished_run):
    from av_snn_ros.model_card import ModelCard
    cfg, result = finished_run
    out = Path(cfg.out_dir)
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['finished'] and len(metrics['history']) == 2
    for h in metrics['history']:
        assert math.isfinite(h['train_loss']) and 0 <= h['val_accuracy'] <= 1
        assert h['val_audio_accuracy'] is not None and h['val_visual_accuracy'] is not None
    test = metrics['test']
    assert test['num_samples'] == 16 and sum(map(sum, test['confusion_matrix'])) == 16
    assert set(test['per_class_recall']) == {str(d) for d in range(10)}
    assert metrics['data']['test_speakers'] == ['theo']
    for png in ('curves.png', 'confusion.png'):
        assert (out / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    preds = json.loads((out / 'test_predictions.json').read_text())['samples']
    assert len(preds) == 16 and {'audio_file', 'image_index', 'label', 'prediction'} <= set(preds[0])
    assert sum(p['label'] == p['prediction'] for p in preds) == round(test['accuracy'] * 16)

    card_md = (Path(result['card']).parent / 'MODEL_CARD.md').read_text()
    assert f'| fused accuracy | {100 * test["accuracy"]:.2f} % |' in card_md and 'CC BY-SA 4.0' in card_md
    card = ModelCard.load(result['card'])
    assert card.name == 'av_digits_misnet_tiny' and card.model == 'misnet_tiny'
    assert card.model_args == cfg.model_args and card.labels == [str(d) for d in range(10)]
    calibration = metrics['calibration']        # temperature scaling fitted on val, carried by the card
    assert calibration['split'] == 'val' and card.logit_scale == calibration['logit_scale'] > 0
    assert calibration['val_ece_after'] <= calibration['val_ece_before'] + 1e-9
    assert card.preprocessing == cfg.preprocess_config()
    assert card.extra['metrics']['test_accuracy'] == test['accuracy']
    assert card.extra['training']['recipe']['seed'] == cfg.seed
    card.verified_onnx()
    best = load_checkpoint(out / 'best.pt')
    loaded = card.load_torch_model().state_dict()
    assert all(torch.equal(loaded[k], best['model'][k]) for k in loaded)


@pytest.mark.slow
def test_a_short_seeded_run_learns(data_root, tmp_path):
    """Training must learn, not merely run: validation accuracy far above chance, losses clearly down."""
    result = train(TrainConfig.from_dict({**LEARNING, 'out_dir': str(tmp_path)}), data_root=data_root)
    history = result['history']
    summary = [(h['train_loss'], h['val_loss'], h['val_accuracy']) for h in history]
    assert history[-1]['val_accuracy'] >= 4 * CHANCE, summary
    assert result['best']['val_accuracy'] >= 4 * CHANCE, summary
    assert history[-1]['train_loss'] < 0.8 * history[0]['train_loss'], summary
    assert history[-1]['val_loss'] < 0.8 * history[0]['val_loss'], summary
    assert result['test']['accuracy'] >= 3 * CHANCE, result['test']['accuracy']   # held-out speaker


def test_eval_cli_on_the_card_reproduces_the_training_test_metrics(finished_run, data_root, tmp_path):
    cfg, result = finished_run
    report_path = tmp_path / 'eval.json'
    parser = argparse.ArgumentParser()
    cli_eval.add_arguments(parser)
    args = parser.parse_args(['--data-root', str(data_root), '--card', result['card'], '--num', '16',
                              '--batch-size', '8', '--json', str(report_path)])
    assert cli_eval.main(args) == 0
    report = json.loads(report_path.read_text())
    assert report['data']['speakers'] == ['theo'] and report['data']['num'] == 16
    assert report['metrics']['accuracy'] == result['test']['accuracy']
    training = json.loads((Path(cfg.out_dir) / 'test_predictions.json').read_text())['samples']
    keys = ('audio_file', 'image_index', 'label', 'prediction')
    assert [[s[k] for k in keys] for s in report['samples']] == [[s[k] for k in keys] for s in training]

    ckpt_args = parser.parse_args(['--data-root', str(data_root), '--checkpoint', str(Path(cfg.out_dir) / 'best.pt'),
                                   '--num', '8', '--protocol', 'noisy', '--json', str(tmp_path / 'noisy.json')])
    assert cli_eval.main(ckpt_args) == 0
    noisy = json.loads((tmp_path / 'noisy.json').read_text())
    assert noisy['data']['protocol'] == 'noisy' and len(noisy['samples']) == 8


def test_eval_cli_reports_bad_input_without_traceback(data_root, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    cli_eval.add_arguments(parser)
    args = parser.parse_args(['--data-root', str(data_root), '--checkpoint', str(tmp_path / 'missing.pt'),
                              '--json', str(tmp_path / 'x.json')])
    assert cli_eval.main(args) == 2
    assert 'checkpoint not found' in capsys.readouterr().err


def test_train_cli_rejects_bad_overrides(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    cli_train.add_arguments(parser)
    recipe = tmp_path / 'r.yaml'
    recipe.write_text('model: misnet_tiny\n')
    assert cli_train.main(parser.parse_args(['--recipe', str(recipe), 'nonsense_key=1'])) == 2
    assert 'nonsense_key' in capsys.readouterr().err
    assert cli_train.main(parser.parse_args(['--resume'])) == 2
    assert '--out' in capsys.readouterr().err


@pytest.mark.parametrize('protocol', ['clean', 'noisy'])
def test_sample_cache_never_freezes_epoch_dependent_noise(data_root, protocol):
    from av_snn_training.data.av_digits import AVDigits
    from av_snn_training.trainer import CachedDataset
    cached = CachedDataset(AVDigits(data_root, 'train', protocol=protocol, num=3))
    first = [cached[i] for i in range(3)]
    cached.set_epoch(1)
    fresh = AVDigits(data_root, 'train', protocol=protocol, num=3)
    fresh.set_epoch(1)
    for i in range(3):
        assert all(torch.equal(a, b) for a, b in zip(cached[i][:2], fresh[i][:2]))
    changed = not torch.equal(first[0][0], cached[0][0])
    assert changed == (protocol == 'noisy')
    assert cached.speakers == fresh.speakers    # attributes pass through the wrapper


def test_eval_cli_defaults_to_the_shipped_model(data_root, shipped_card, tmp_path):
    from av_snn_ros.model_card import ModelCard
    card = ModelCard.load(shipped_card)
    parser = argparse.ArgumentParser()
    cli_eval.add_arguments(parser)
    out = tmp_path / 'default.json'
    assert cli_eval.main(parser.parse_args(['--data-root', str(data_root), '--num', '10', '--json', str(out)])) == 0
    report = json.loads(out.read_text())
    assert report['model']['card'] == str(card.path) and report['model']['name'] == card.name
    assert report['data']['protocol'] == 'clean' and report['data']['speakers'] == ['theo']
    assert len(report['samples']) == 10 and report['labels'] == card.labels
