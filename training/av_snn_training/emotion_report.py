"""The emotion model's report: 8- and 4-class accuracy, recall, confusion, conditions, CNN and energy.

Everything is read from measured files: ``av-snn eval`` reports (test actors, with ``--conditions``) of
the spiking card and of the non-spiking CNN baseline, and the two runs' ``metrics.json`` (validation,
calibration, energy). Writes ``MODEL_CARD.md`` and ``confusion.png`` into the card folder and a
``license`` key into its card.yaml.

usage: python -m av_snn_training.emotion_report --card models/emotion --eval E.json --cnn-eval C.json \\
           --metrics runs/emotion_snn/metrics.json --cnn-metrics runs/emotion_cnn/metrics.json \\
           [--window-runs runs/emotion_window_1.0 runs/emotion_window_2.0 runs/emotion_window_3.0]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .calibration import expected_calibration_error
from .data.ravdess import FOUR_CLASS, LABELS, REP155_EXPRESSIONS, TEST_ACTORS, VAL_ACTORS

LICENSE = ('CC BY-NC-SA 4.0 (trained on RAVDESS): non-commercial use only; share derivatives alike; '
           'attribute Livingstone & Russo 2018')


def four_class_accuracy(logits: np.ndarray, targets: np.ndarray, labels: Sequence[str]) -> tuple[float, int]:
    """Accuracy on the windows of the 4-class subset (neutral/happy/sad/angry) with the prediction restricted
    to those four outputs (the usual 4-class protocol); returns (accuracy, windows)."""
    idx = [list(labels).index(c) for c in FOUR_CLASS]
    keep = np.isin(targets, idx)
    if not keep.any():
        return float('nan'), 0
    pred = np.array(idx)[logits[keep][:, idx].argmax(1)]
    return float(np.mean(pred == targets[keep])), int(keep.sum())


def summary(report: dict[str, Any], logit_scale: float) -> dict[str, Any]:
    """Headline numbers of one ``av-snn eval`` report."""
    labels = report['labels']
    logits = np.array([s['logits'] for s in report['samples']], dtype=np.float64)
    targets = np.array([s['label'] for s in report['samples']], dtype=np.int64)
    acc4, n4 = four_class_accuracy(logits, targets, labels)
    return {'accuracy': report['metrics']['accuracy'], 'four_class_accuracy': acc4, 'four_class_windows': n4,
            'ece': expected_calibration_error(logits, targets, logit_scale), 'windows': len(targets),
            'per_class_recall': report['metrics']['per_class_recall'],
            'confusion_matrix': report['metrics']['confusion_matrix']}


def _pct(x: float | None) -> str:
    return 'n/a' if x is None or (isinstance(x, float) and np.isnan(x)) else f'{100 * x:.1f} %'


def render(card: Any, snn: dict, cnn: dict | None, metrics: dict, cnn_metrics: dict | None,
           conditions: dict[str, Any], windows: list[tuple[float, float, int]]) -> str:
    """MODEL_CARD.md text."""
    cal = metrics['calibration']
    lines = [
        f'# Model card: {card.name} (speech emotion, audio only)', '',
        (card.extra.get('description') or '').strip(), '',
        '**Licence: non-commercial.** Trained on RAVDESS (CC BY-NC-SA 4.0): this model inherits the '
        'non-commercial and share-alike conditions. Attribution: Livingstone SR, Russo FA (2018), The '
        'Ryerson Audio-Visual Database of Emotional Speech and Song (RAVDESS), PLoS ONE 13(5): e0196391, '
        'doi:10.1371/journal.pone.0196391; data doi:10.5281/zenodo.1188976.', '',
        '| | |', '|---|---|',
        f'| Model | `{card.model}` (spiking, MISNet-XS audio branch at width 0.25), {metrics["parameters"]:,} '
        f'parameters, {card.weights.stat().st_size / 1e6:.2f} MB weights |',
        f'| Input | one {card.preprocessing.window_s:g} s microphone window, 16 kHz, {card.preprocessing.timesteps} '
        'timesteps of a 32x32 log-mel slice (card.yaml `preprocessing`); no camera (`modalities: [audio]`) |',
        f'| Output | {", ".join(card.labels)}; `none` = no emotional speech (idle: silence, room tone, noise) |',
        f'| Decision | event only if the top class is not `none` and its calibrated probability >= '
        f'`accept_threshold` = {card.accept_threshold}; `logit_scale` = {card.logit_scale:.4g} |',
        f'| Energy (45 nm estimate, per window) | {metrics["energy"]["energy_mj"] * 1e3:.2f} uJ '
        f'(firing rate {metrics["energy"]["firing_rate"]:.3f}) |', '',
        '## Labels and REP-155 (ROS4HRI)', '',
        'Labels follow the REP-155 expression names where one exists. `hri_msgs/Expression.expression` for '
        'each label: ' + ', '.join(f'`{k}` -> `{v}`' for k, v in REP155_EXPRESSIONS.items()) +
        '; `calm` is RAVDESS-only (no REP-155 expression); `none` publishes no expression.', '',
        '## Data and split', '',
        f'RAVDESS speech, actors 01-20 (16 kHz). Split by actor (docs/data.md): test = actors '
        f'{" + ".join(TEST_ACTORS)} (male + female, never used for training, selection or calibration), '
        f'val = actors {" + ".join(VAL_ACTORS)} (best epoch, temperature, acceptance threshold), train = 01-16. '
        'Robustness training (docs/data.md): noise -5..30 dB SNR on a microphone floor, gain, speed '
        'perturbation, SpecAugment, late onsets, idle windows labelled `none`.', '',
        '## Results on the held-out test actors (clean windows)', '',
        '| | emotion_snn (this model) | emotion_cnn (non-spiking, same size/front end/recipe) | target |',
        '|---|---|---|---|',
        f'| 8-class accuracy ({snn["windows"]} windows, chance 12.5 %) | {_pct(snn["accuracy"])} | '
        f'{_pct(cnn["accuracy"]) if cnn else "n/a"} | >= 65 % |',
        f'| 4-class accuracy neutral/happy/sad/angry ({snn["four_class_windows"]} windows, prediction '
        f'restricted to the four) | {_pct(snn["four_class_accuracy"])} | '
        f'{_pct(cnn["four_class_accuracy"]) if cnn else "n/a"} | >= 80 % |',
        f'| ECE (calibrated, 10 bins) | {snn["ece"]:.3f} | {cnn["ece"]:.3f} | <= 0.05 |' if cnn else
        f'| ECE (calibrated, 10 bins) | {snn["ece"]:.3f} | n/a | <= 0.05 |',
        f'| validation accuracy (actors 17+18 mix incl. idle) | {_pct(metrics["best"]["val_accuracy"])} | '
        f'{_pct(cnn_metrics["best"]["val_accuracy"]) if cnn_metrics else "n/a"} | |',
        f'| energy per window (estimate) | {metrics["energy"]["energy_mj"] * 1e3:.2f} uJ | '
        f'{cnn_metrics["energy"]["energy_mj"] * 1e3:.2f} uJ |  |' if cnn_metrics and cnn_metrics.get('energy') else
        f'| energy per window (estimate) | {metrics["energy"]["energy_mj"] * 1e3:.2f} uJ | n/a | |',
        '', 'Per-class recall (test actors):', '',
        '| ' + ' | '.join(LABELS) + ' |', '|' + '---|' * len(LABELS),
        '| ' + ' | '.join(_pct(snn['per_class_recall'].get(c)) for c in LABELS) + ' |', '',
        'Confusion matrix: `confusion.png` (rows = truth, columns = prediction, incl. `none`).', '',
        f'Calibration: temperature fitted on the validation mix ({cal["samples"]} windows: clean, noisy and idle '
        f'of actors 17+18), val ECE {cal["val_ece_before"]:.3f} -> {cal["val_ece_after"]:.3f}.', '',
    ]
    if conditions:
        from .conditions import markdown_table
        lines += ['## Conditions (test actors; docs/data.md defines each)', '', markdown_table(conditions), '']
    if windows:
        lines += ['## Window length (measured)', '',
                  'Same recipe without augmentation, 5 epochs, validation actors 17+18 only (120 clips):', '',
                  '| window | best val accuracy | best epoch |', '|---|---|---|']
        lines += [f'| {w:g} s | {_pct(a)} | {e} |' for w, a, e in windows]
        lines.append('')
    lines += ['## Intended use and limits', '',
              '- Research and non-commercial HRI prototypes: a hint of the vocal emotion of acted English '
              'speech from a microphone; never for decisions about people.',
              '- Trained on 16 North-American actors reading two fixed sentences in a studio; real, '
              'spontaneous, accented, child, far-field or multi-speaker speech will score lower. Emotion is '
              'acted and exaggerated in RAVDESS.',
              '- The test set is 2 actors (120 clips): every accuracy here has a standard error of about '
              '4-5 points.',
              '- The targets of issue 17 are not all met (table above): read the confidence, and prefer '
              'the `none` / low-confidence outcome over acting on an uncertain emotion.',
              '- Confidence was calibrated on actors 17+18 with clean, noisy (-5..30 dB SNR) and idle windows; '
              'it is less reliable on conditions outside that mix.', '']
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--card', type=Path, required=True)
    parser.add_argument('--eval', type=Path, required=True, help='av-snn eval report of the card (test actors)')
    parser.add_argument('--metrics', type=Path, required=True, help='the spiking run\'s metrics.json')
    parser.add_argument('--cnn-eval', type=Path)
    parser.add_argument('--cnn-metrics', type=Path)
    parser.add_argument('--window-runs', type=Path, nargs='*', default=[])
    args = parser.parse_args(argv)
    from av_snn_ros.model_card import ModelCard
    from .plots import plot_confusion
    card = ModelCard.load(args.card)
    report = json.loads(args.eval.read_text())
    if report['data']['split'] != 'test' or sorted(report['data']['speakers']) != sorted(TEST_ACTORS):
        parser.error('--eval must be the test-actor report (--speakers 19 20)')
    snn = summary(report, card.logit_scale)
    metrics = json.loads(args.metrics.read_text())
    cnn = cnn_metrics = None
    if args.cnn_eval:
        cnn_metrics = json.loads(args.cnn_metrics.read_text()) if args.cnn_metrics else None
        scale = (cnn_metrics or {}).get('calibration', {}).get('logit_scale', 1.0)
        cnn = summary(json.loads(args.cnn_eval.read_text()), scale)
    windows = []
    for run in args.window_runs:
        m = json.loads((run / 'metrics.json').read_text())
        windows.append((m['config']['preprocessing']['window_s'], m['best']['val_accuracy'], m['best']['epoch']))
    plot_confusion(snn['confusion_matrix'], card.labels, args.card / 'confusion.png',
                   f'{card.name}: test actors 19+20, {100 * snn["accuracy"]:.1f} %')
    text = render(card, snn, cnn, metrics, cnn_metrics, report.get('conditions') or {}, sorted(windows))
    (args.card / 'MODEL_CARD.md').write_text(text)
    card_yaml = card.path.read_text()
    if 'license:' not in card_yaml:
        card.path.write_text(card_yaml.rstrip('\n') + f'\nlicense: {json.dumps(LICENSE)}\n')
    ModelCard.load(args.card)
    def headline(s: dict | None) -> dict | None:
        return s and {k: v for k, v in s.items() if k not in ('confusion_matrix', 'per_class_recall')}
    print(json.dumps({'snn': headline(snn), 'cnn': headline(cnn)}, indent=1))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
