"""Robustness training (data/augment.py), the RAVDESS loader, acceptance thresholds and the condition suite,
on the real data under ../shared/data."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from av_snn_ros.decision import NO_EVENT_LABEL
from av_snn_ros.preprocessing import PreprocessConfig, missing_audio_steps, missing_image_steps
from av_snn_training.calibration import fit_accept_threshold
from av_snn_training.conditions import CONDITIONS, DecisionParams, Window, build_window, score
from av_snn_training.data.augment import AugmentConfig, RobustDataset, idle_audio
from av_snn_training.data.av_digits import LABELS as DIGITS
from av_snn_training.data.av_digits import AVDigits
from av_snn_training.data.ravdess import LABELS as EMOTIONS
from av_snn_training.data.ravdess import TEST_ACTORS, VAL_ACTORS, Ravdess

CFG = PreprocessConfig()


@pytest.fixture(scope='module')
def ravdess_root(data_root):
    if not (data_root / 'ravdess').is_dir():
        pytest.skip('RAVDESS not under the data root')
    return data_root


@pytest.fixture(scope='module')
def digits(data_root):
    return AVDigits(data_root, 'test', CFG, num=12)


def _longest_zero_run(x: np.ndarray) -> int:
    zero = np.concatenate([[0], (x == 0).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(zero))
    return int((edges[1::2] - edges[::2]).max()) if len(edges) else 0


# ----------------------------------------------------------------------------------------- RAVDESS

def test_ravdess_splits_by_actor_with_file_name_labels(ravdess_root):
    splits = {s: Ravdess(ravdess_root, s) for s in ('train', 'val', 'test')}
    assert splits['test'].speakers == TEST_ACTORS and splits['val'].speakers == VAL_ACTORS
    actors = [set(ds.speakers) for ds in splits.values()]
    assert not (actors[0] & actors[1] or actors[0] & actors[2] or actors[1] & actors[2])
    assert sum(len(ds) for ds in splits.values()) == 60 * len(set().union(*actors))
    for ds in splits.values():   # the label is the file name's emotion field, the actor its last field
        for clip in ds.clips:
            assert EMOTIONS[int(clip.path.name.split('-')[2]) - 1] == EMOTIONS[clip.label]
            assert clip.path.stem.split('-')[-1] == clip.actor and clip.actor in ds.speakers
    chosen = Ravdess(ravdess_root, 'test', actors=[19, 'Actor_03'])
    assert chosen.speakers == ('03', '19') and len(chosen) == 120
    with pytest.raises(ValueError, match='not found'):
        Ravdess(ravdess_root, 'test', actors=['42'])


def test_ravdess_window_is_padded_with_a_floor_not_digital_zeros(ravdess_root):
    ds = Ravdess(ravdess_root, 'val', PreprocessConfig(window_s=4.0))
    short = next(i for i in range(len(ds)) if len(ds.clip_audio(i)) < ds.cfg.window_samples)
    assert _longest_zero_run(ds.raw(short)) < 3
    audio, visual, label = ds[short]
    assert audio.shape == (4, 1, 32, 32) and torch.equal(visual, torch.from_numpy(missing_image_steps(ds.cfg)))


# ----------------------------------------------------------------------------------------- augment

def test_augment_options_are_validated():
    with pytest.raises(ValueError, match='noise_prob'):
        AugmentConfig(noise_prob=1.5)
    with pytest.raises(ValueError, match='snr_db'):
        AugmentConfig(snr_db=(20.0, 0.0))
    with pytest.raises(ValueError, match='never both'):
        AugmentConfig(drop_audio_prob=0.6, drop_image_prob=0.6)
    with pytest.raises(ValueError, match='widht'):
        AugmentConfig.from_dict({'widht': 1})


def test_robust_training_set_adds_idle_windows_labelled_none_and_redraws_per_epoch(digits):
    ds = RobustDataset(digits, DIGITS, AugmentConfig(idle_fraction=0.5), 'train', seed=0)
    assert ds.classes[-1] == NO_EVENT_LABEL and len(ds) == 12 + 6
    assert ds.labels[12:] == [10] * 6 and all(ds[i][2] == 10 for i in range(12, 18))
    before = ds[0][0].clone()
    ds.set_epoch(1)
    assert not torch.equal(before, ds[0][0])            # a new augmentation draw every epoch
    ds.set_epoch(0)
    assert torch.equal(before, ds[0][0])                # ... and a deterministic one
    val = RobustDataset(digits, DIGITS, AugmentConfig(idle_fraction=0.5), 'val', seed=0)
    first = [val[i][0] for i in range(3)]
    val.set_epoch(5)
    assert all(torch.equal(a, val[i][0]) for i, a in enumerate(first))   # the calibration mix is fixed
    assert sorted(val.labels) == sorted(ds.labels)      # interleaved, same content


def test_windows_never_contain_digital_silence_and_idle_kinds_differ():
    rng = np.random.default_rng(0)
    aug = AugmentConfig()
    levels = {}
    for kind in ('silence', 'room', 'noise'):
        x = idle_audio(kind, CFG.window_samples, CFG.sample_rate, aug, rng)
        assert _longest_zero_run(x) < 3 and np.abs(x).max() <= 0.99
        levels[kind] = float(np.sqrt(np.mean(x ** 2)))
    assert levels['silence'] < levels['room'] < levels['noise']


def test_event_windows_place_late_onsets_and_use_the_shared_missing_sense(digits):
    aug = AugmentConfig(onset_prob=1.0, onset_frac=(0.6, 0.6), drop_audio_prob=0.5, drop_image_prob=0.5,
                        image_prob=0.0, speed_prob=0.0, spec_prob=0.0, noise_prob=0.0, gain_db=(0.0, 0.0))
    ds = RobustDataset(digits, DIGITS, aug, 'train', seed=1)
    audio, frames, label = ds.event_raw(0, np.random.default_rng(3))
    image = digits.event(0).image
    late = [c >= 0.6 * CFG.window_s for c in CFG.step_centers_s()]
    assert [np.array_equal(f, image) for f in frames] == late        # idle frames before the onset
    onset = int(0.6 * CFG.window_samples)
    before, after = (float(np.sqrt(np.mean(x ** 2))) for x in (audio[:onset], audio[onset:]))
    assert before < 10 ** (-50 / 20) * 1.5 and after > 5 * before       # only the floor before the onset
    assert _longest_zero_run(audio) < 3
    missing = {'audio': 0, 'image': 0}
    for i in range(12):
        a, v, _ = ds[i]
        missing['audio'] += torch.equal(a, torch.from_numpy(missing_audio_steps(CFG)))
        missing['image'] += torch.equal(v, torch.from_numpy(missing_image_steps(CFG)))
    assert missing['audio'] > 0 and missing['image'] > 0 and missing['audio'] + missing['image'] == 12


# ----------------------------------------------------------------------------------------- acceptance

def test_accept_threshold_is_the_smallest_that_rejects_idle_windows():
    labels = ['a', 'b', NO_EVENT_LABEL]
    # idle windows: one with an event on top at 0.55, the rest clearly none; events at 0.9
    probs = np.array([[0.55, 0.05, 0.4]] + [[0.1, 0.1, 0.8]] * 99 + [[0.9, 0.05, 0.05]] * 50)
    targets = np.array([2] * 100 + [0] * 50)
    assert fit_accept_threshold(probs, targets, labels, NO_EVENT_LABEL) == 0.0   # 1 % false events allowed
    probs[1, :] = [0.05, 0.6, 0.35]
    assert fit_accept_threshold(probs, targets, labels, NO_EVENT_LABEL) == pytest.approx(0.56)
    assert fit_accept_threshold(probs, targets, labels, None) == 0.0


# ----------------------------------------------------------------------------------------- conditions

def test_condition_windows_follow_their_definitions(digits):
    t = CFG.timesteps
    late = build_window('late_onset', digits, 0, CFG, seed=0)
    assert all(not f.any() for f in late.frames[:t - 2]) and np.array_equal(late.frames[-1], digits.event(0).image)
    straddle = build_window('straddle', digits, 1, CFG, seed=0)
    assert np.array_equal(straddle.frames[0], digits.event(0).image)
    assert np.array_equal(straddle.frames[-1], digits.event(1).image) and straddle.other == digits.event(0).label
    conflict = build_window('conflict', digits, 2, CFG, seed=0)
    assert conflict.other != conflict.target == digits.event(2).label
    for name in ('idle_silence_black', 'idle_room_grey', 'idle_noise'):
        w = build_window(name, digits, 0, CFG, seed=0)
        assert w.target == -1 and _longest_zero_run(w.audio) < 3
        assert np.array_equal(w.audio, build_window(name, digits, 0, CFG, seed=0).audio)   # seeded
    assert build_window('audio_missing', digits, 0, CFG, 0).audio is None
    assert build_window('image_missing', digits, 0, CFG, 0).frames is None
    assert set(CONDITIONS) >= {'clean', 'noisy', 'conflict', 'straddle', 'late_onset'}


def test_condition_scores_use_the_runtime_decision():
    labels = ['a', 'b', NO_EVENT_LABEL]
    params = DecisionParams(labels, logit_scale=1.0, no_event_label=NO_EVENT_LABEL, accept_threshold=0.7)
    big = 10.0
    idle = [Window(None, None, -1)] * 4
    logits = np.array([[0, 0, big], [0, 0, big], [big, 0, 0], [0.0, 0.0, 0.0]])   # the 3rd is a false event
    out = score(idle, logits, logits, logits, params, 'idle_noise')
    assert out['accuracy'] == 0.75 and out['accept_rate'] == 0.25 and out['wrong_over_0_9'] == 0.25
    events = [Window(None, None, 0)] * 2
    logits = np.array([[big, 0, 0], [1.0, 0.9, 0.0]])   # the 2nd is right but below the threshold
    out = score(events, logits, logits, logits, params, 'clean')
    assert out['accuracy'] == 1.0 and out['accept_rate'] == 0.5 and out['wrong_over_0_9'] == 0.0
    conflict = [Window(None, None, 0, other=1)] * 2
    a = np.array([[big, 0, 0], [big, 0, 0]])
    v = np.array([[0, big, 0], [0, 0.5, 0]])             # only the first pair is confidently different
    out = score(conflict, v, a, v, params, 'conflict')
    assert out['accuracy'] == 0.5 and out['follows_visual'] == 1.0 and out['wrong_over_0_9'] == 0.0


def test_eval_cli_runs_the_condition_suite_on_the_shipped_card(data_root, tmp_path):
    from av_snn_training import cli_eval
    parser = argparse.ArgumentParser()
    cli_eval.add_arguments(parser)
    out = tmp_path / 'cond.json'
    args = parser.parse_args(['--data-root', str(data_root), '--num', '8', '--json', str(out), '--conditions',
                              'clean', 'idle_noise', 'conflict', 'image_missing'])
    assert cli_eval.main(args) == 0
    report = json.loads(out.read_text())
    assert set(report['conditions']) == {'clean', 'idle_noise', 'conflict', 'image_missing'}
    # the shipped (clean-trained) card is a visual classifier: removing the camera changes its decisions
    assert report['conditions']['image_missing']['changed_vs_clean'] > 0.5
    clean = report['conditions']['clean']
    assert clean['accuracy'] == report['metrics']['accuracy'] and clean['num_windows'] == 8
    for metrics in report['conditions'].values():
        assert {'accuracy', 'accept_rate', 'ece', 'wrong_over_0_9', 'mean_confidence'} <= set(metrics)
    assert (tmp_path / 'cond.conditions.png').stat().st_size > 0


# ----------------------------------------------------------------------------------------- emotion end to end

def test_emotion_training_writes_an_audio_only_card_with_the_no_event_contract(ravdess_root, tmp_path):
    """A tiny real run of the emotion recipe (robustness on) -> card -> `av-snn eval --speakers 19 20`."""
    from av_snn_ros.model_card import ModelCard
    from av_snn_training import cli_eval
    from av_snn_training.recipe import load_recipe
    from av_snn_training.trainer import train
    cfg = load_recipe('training/recipes/emotion_snn.yaml', {
        'model_args': {'width': 0.125}, 'epochs': 1, 'warmup_epochs': 0, 'batch_size': 16, 'train_num': 48,
        'max_batches_per_epoch': 2, 'num_workers': 0, 'torch_threads': 1, 'out_dir': str(tmp_path / 'run')})
    metrics = train(cfg, data_root=ravdess_root)
    card = ModelCard.load(tmp_path / 'run' / 'card')
    assert card.labels == [*EMOTIONS, NO_EVENT_LABEL] and card.modality_heads == ('audio',)
    assert card.no_event_label == NO_EVENT_LABEL and card.modalities == ('audio',)
    assert 0.0 <= card.accept_threshold <= 1.0
    assert metrics['data']['test_speakers'] == list(TEST_ACTORS) and metrics['energy']['energy_mj'] > 0
    assert 'RAVDESS' in card.extra['data']['attribution'] and 'NON-COMMERCIAL' in card.extra['data']['attribution']
    parser = argparse.ArgumentParser()
    cli_eval.add_arguments(parser)
    out = tmp_path / 'eval.json'
    args = parser.parse_args(['--data-root', str(ravdess_root), '--card', str(card.path), '--speakers', '19', '20',
                              '--num', '6', '--json', str(out), '--conditions', 'idle_noise', 'late_onset', 'conflict'])
    assert cli_eval.main(args) == 0
    report = json.loads(out.read_text())
    assert report['data']['speakers'] == ['19', '20'] and report['metrics']['num_samples'] == 6
    assert report['conditions']['conflict'] == {'skipped': 'the model has no camera input'}
    assert report['conditions']['idle_noise']['num_windows'] == 6


def test_cnn_baseline_is_all_macs_while_the_snn_accumulates_spikes(ravdess_root):
    """The energy comparison of the emotion report rests on this: the CNN's layers all get real-valued
    input (MACs at 4.6 pJ), the SNN's inner layers get spikes (accumulates at 0.9 pJ x firing rate)."""
    from av_snn_ros.models.energy import estimate_energy
    from av_snn_ros.models.registry import create_model
    ds = Ravdess(ravdess_root, 'val', PreprocessConfig(window_s=2.0), num=4)
    audio = torch.stack([ds[i][0] for i in range(4)], dim=1)          # (T, B, 1, 32, 32)
    visual = torch.stack([ds[i][1] for i in range(4)], dim=1)
    torch.manual_seed(0)
    cnn, snn = create_model('emotion_cnn').eval(), create_model('emotion_snn').eval()
    cnn_e, snn_e = estimate_energy(cnn, audio, visual), estimate_energy(snn, audio, visual)
    assert cnn_e.sop_mj == 0 and cnn_e.mac_mj > 0
    assert snn_e.sop_mj > 0 and 0 <= snn_e.summary()['firing_rate'] <= 1
    # the same stages do about the same multiply-accumulates per window
    assert 0.5 < cnn_e.summary()['macs'] / snn_e.summary()['macs'] < 2.0


def test_shipped_emotion_card_is_small_complete_and_non_commercial():
    from pathlib import Path

    from av_snn_ros.model_card import ModelCard
    folder = Path(__file__).resolve().parent.parent / 'models' / 'emotion'
    card = ModelCard.load(folder)
    card.verified_onnx()
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 5 * 1024 * 1024
    assert card.labels == [*EMOTIONS, NO_EVENT_LABEL] and card.modalities == ('audio',)
    assert card.no_event_label == NO_EVENT_LABEL and 0 <= card.accept_threshold <= 1
    assert card.preprocessing.window_s == 2.0 and 'non-commercial' in card.extra['license']
    text = (folder / 'MODEL_CARD.md').read_text()
    assert 'non-commercial' in text and 'Per-class recall' in text and 'scared' in text
    assert (folder / 'confusion.png').is_file()
