"""``av-snn eval``: accuracy of a checkpoint, a model card or the shipped default model on held-out data.

The JSON report holds accuracy, per-class recall, per-modality (head) accuracy, the confusion matrix and
the exact sample list (audio file, MNIST image index, label, prediction, fused logits) so a rosbag replay
of the same samples can be compared with these predictions one by one.

Examples:

    av-snn eval --data-root ../shared/data --json eval.json                  # shipped default model
    av-snn eval --data-root ../shared/data --card models/default --protocol noisy --json noisy.json
    av-snn eval --data-root ../shared/data --checkpoint runs/x/best.pt --speakers theo --num 100 --json e.json
    av-snn eval --data-root ../shared/data --conditions all --num 200 --json cond.json   # + cond.conditions.png
    av-snn eval --data-root ../shared/data --card models/emotion --speakers 19 20 --conditions all --json emo.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from .conditions import CONDITIONS
from .recipe import PROTOCOLS, TrainConfig

# Recipe fields of a model card's training record that decide which samples an evaluation sees.
DATA_FIELDS = ('dataset', 'dataset_args', 'protocol', 'seed', 'train_speakers', 'test_speakers', 'val_split', 'augment',
               'val_fraction')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split('\n\n', 2)[2]
    parser.add_argument('--data-root', type=Path, help='data folder (default: AV_SNN_DATA_ROOT or '
                        '../shared/data beside the checkout)')
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--checkpoint', type=Path, help='a training checkpoint (best.pt / last.pt)')
    source.add_argument('--card', type=Path, help='a model card (card.yaml or its folder)')
    parser.add_argument('--protocol', choices=PROTOCOLS,
                        help='input protocol (default: the one the model was trained with)')
    parser.add_argument('--split', choices=('test', 'val', 'train'), default='test',
                        help='data split (default: test = the held-out speakers)')
    parser.add_argument('--speakers', nargs='+', metavar='NAME',
                        help='speakers to evaluate: AV digits names, RAVDESS actor numbers (e.g. 19 20) '
                        '(default: the split\'s speakers from training)')
    parser.add_argument('--num', type=int, help='evaluate only the first N samples of the seeded order')
    parser.add_argument('--seed', type=int, help='pairing/corruption seed (default: the training seed)')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--threads', type=int, help='torch threads (default: torch\'s choice)')
    parser.add_argument('--conditions', nargs='+', metavar='NAME',
                        help='also run the condition suite: "all" or names from '
                        f'{", ".join(CONDITIONS)} (docs/data.md); adds report["conditions"] and a plot beside OUT')
    parser.add_argument('--json', type=Path, required=True, metavar='OUT', help='write the report here')


def load_model(args: argparse.Namespace) -> tuple[torch.nn.Module, TrainConfig, list[str], dict[str, Any]]:
    """The model, the config describing its data/preprocessing, its labels and a description of the source."""
    if args.checkpoint is not None:
        from .trainer import load_checkpoint, model_from_checkpoint
        ckpt = load_checkpoint(args.checkpoint)
        model, cfg, labels = model_from_checkpoint(ckpt)
        return model, cfg, labels, {'checkpoint': str(args.checkpoint), 'model': cfg.model,
                                    'epoch': int(ckpt['epoch'])}
    from av_snn_ros.config import to_dict
    from av_snn_ros.model_card import ModelCard
    from av_snn_ros.paths import default_model_card
    path = args.card if args.card is not None else default_model_card()
    card = ModelCard.load(path)
    model = card.load_torch_model()
    stored = dict((card.extra.get('training') or {}).get('recipe') or {})
    # Only what decides the evaluated data, so cards written by other TrainConfig versions still load.
    recipe = {k: stored[k] for k in DATA_FIELDS if k in stored}
    # The card's preprocessing is what the runtime uses: it wins over anything in the stored recipe.
    recipe.update(model=card.model, model_args=dict(card.model_args), preprocessing=to_dict(card.preprocessing))
    recipe.setdefault('dataset', (card.extra.get('data') or {}).get('dataset', 'av_digits'))
    try:
        cfg = TrainConfig.from_dict(recipe)
    except ValueError as exc:
        raise ValueError(f'{card.path}: the card\'s training recipe is not a valid TrainConfig: {exc}') from exc
    return model, cfg, list(card.labels), {'card': str(card.path), 'name': card.name, 'model': card.model}


def build_eval_dataset(cfg: TrainConfig, args: argparse.Namespace, data_root: Path):
    """The evaluated split with the CLI's protocol/speakers/seed/num laid over the model's training config."""
    changes: dict[str, Any] = {}
    if args.protocol is not None:
        changes['protocol'] = args.protocol
    if args.seed is not None:
        changes['seed'] = args.seed
    if args.speakers is not None:
        from .recipe import SPEAKER_DATASETS
        if cfg.dataset not in SPEAKER_DATASETS:
            raise ValueError(f'--speakers applies to the {SPEAKER_DATASETS} data sets only')
        changes['test_speakers' if args.split == 'test' else 'train_speakers'] = list(args.speakers)
    cfg = cfg.replace(**changes)
    from .trainer import build_dataset
    dataset = build_dataset(cfg.replace(train_num=None), args.split, data_root)
    if args.num is not None:
        if args.num < 1 or args.num > len(dataset):
            raise ValueError(f'--num must be in [1, {len(dataset)}] for this split, got {args.num}')
        if cfg.dataset == 'av_digits':   # AVDigits' num keeps a prefix of the seeded order and its metadata
            from .data.av_digits import AVDigits
            dataset = AVDigits(data_root, split=args.split, cfg=cfg.preprocess_config(), protocol=cfg.protocol,
                               seed=cfg.seed, speakers=getattr(dataset, 'speakers', None), num=args.num)
        elif cfg.dataset == 'ravdess':
            from .data.ravdess import Ravdess
            from .trainer import robust
            dataset = robust(Ravdess(data_root, split=args.split, cfg=cfg.preprocess_config(), seed=cfg.seed,
                                     actors=getattr(dataset, 'speakers', None), num=args.num), cfg, args.split)
        else:
            dataset = torch.utils.data.Subset(dataset, range(args.num))
    return cfg, dataset


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate and return the report (also written to ``args.json``)."""
    from .evaluate import sample_records, summarize
    from .trainer import build_eval_loader, modality_heads, predict, resolve_data_root
    if args.threads:
        torch.set_num_threads(args.threads)
    model, cfg, labels, source = load_model(args)
    data_root = resolve_data_root(cfg.replace(data_root=None), args.data_root)
    cfg, dataset = build_eval_dataset(cfg, args, data_root)
    pred = predict(model, build_eval_loader(dataset, args.batch_size))
    metrics = summarize(pred, labels, modality_heads(model))
    report = {
        'model': source,
        'data': {'data_root': str(data_root), 'dataset': cfg.dataset, 'split': args.split,
                 'protocol': cfg.protocol, 'seed': cfg.seed, 'num': len(dataset),
                 'speakers': list(getattr(dataset, 'speakers', []) or [])},
        'labels': labels,
        'modality_heads': list(modality_heads(model)),
        'metrics': metrics,
        'samples': sample_records(dataset, pred, labels),
    }
    if args.conditions:
        report['conditions'] = _conditions(args, model, cfg, labels, dataset)
        from .conditions import plot_conditions
        args.json.parent.mkdir(parents=True, exist_ok=True)
        plot = plot_conditions(report['conditions'], args.json.with_suffix('.conditions.png'),
                               f'{source.get("name") or source["model"]}: conditions ({len(dataset)} windows each)')
        report['conditions_plot'] = str(plot)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    return report


def _conditions(args: argparse.Namespace, model: torch.nn.Module, cfg: TrainConfig, labels: list[str],
                dataset: Any) -> dict[str, Any]:
    """The condition suite on the evaluated split's events with the card's decision parameters."""
    from .conditions import DecisionParams, run_conditions
    from .trainer import _unwrap
    names = list(CONDITIONS) if args.conditions == ['all'] else list(args.conditions)
    if args.checkpoint is not None:   # no card: uncalibrated scores, background class if the labels have one
        from av_snn_ros.decision import NO_EVENT_LABEL
        params = DecisionParams(labels, no_event_label=NO_EVENT_LABEL if NO_EVENT_LABEL in labels else None,
                                heads=tuple(getattr(model, 'modality_heads', ('audio', 'visual'))))
    else:
        from av_snn_ros.model_card import ModelCard
        from av_snn_ros.paths import default_model_card
        params = DecisionParams.from_card(ModelCard.load(args.card if args.card is not None else default_model_card(),
                                                         verify=False))
    if isinstance(dataset, torch.utils.data.Subset):
        raise ValueError('--conditions needs the whole split or a --num prefix of av_digits / ravdess')
    base = _unwrap(dataset)
    while not hasattr(base, 'event') and hasattr(base, 'base'):   # the robustness wrapper's event source
        base = base.base
    if not hasattr(base, 'event'):
        raise ValueError(f'--conditions: data set {cfg.dataset} has no clean events (event(i)) to build '
                         'conditions from')
    inputs = getattr(model, 'modalities', ('audio', 'visual'))
    return run_conditions(model, base, cfg.preprocess_config(), params, cfg.seed, names, inputs, args.batch_size,
                          progress=lambda name: print(f'  condition {name} done', file=sys.stderr, flush=True))


def main(args: argparse.Namespace) -> int:
    from av_snn_ros.model_card import ModelFileError
    try:
        report = run(args)
    except (ValueError, FileNotFoundError, ModelFileError) as exc:
        print(f'av-snn eval: error: {exc}', file=sys.stderr)
        return 2
    m, d = report['metrics'], report['data']

    def pct(x: float | None) -> str:
        return 'n/a' if x is None else f'{100 * x:.2f}%'
    print(f'{report["model"].get("name") or report["model"]["model"]}: {d["split"]} {d["protocol"]} '
          f'({d["num"]} samples, speakers {",".join(d["speakers"]) or "-"}): accuracy {pct(m["accuracy"])}, '
          f'audio head {pct(m["audio_accuracy"])}, visual head {pct(m["visual_accuracy"])} -> {args.json}')
    return 0
