"""``av-snn train``: train a model from a recipe (checkpoints, metrics JSON, plots, model card).

Examples:

    av-snn train --recipe training/recipes/digits_misnet_tiny.yaml --data-root ../shared/data
    av-snn train --recipe R.yaml epochs=2 lr=0.05 model_args='{width: 0.5}'
    av-snn train --out runs/digits_misnet_tiny --resume            # continue an interrupted run
    torchrun --nproc_per_node=2 -m av_snn_ros.cli train --recipe R.yaml   # DistributedDataParallel
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .recipe import TrainConfig, load_recipe, parse_overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split('\n', 2)[2]
    parser.add_argument('--recipe', type=Path, help='recipe YAML (training/recipes/*.yaml); keys = TrainConfig '
                        'fields. Optional with --resume (the checkpoint holds the recipe)')
    parser.add_argument('--data-root', type=Path, help='data folder (default: recipe data_root, then '
                        'AV_SNN_DATA_ROOT or ../shared/data beside the checkout)')
    parser.add_argument('--out', type=Path, help='output folder (overrides the recipe out_dir)')
    parser.add_argument('--resume', action='store_true', help='continue from OUT/last.pt bit-identically')
    parser.add_argument('--stop-after-epochs', type=int, metavar='N',
                        help='end this invocation after N epochs (continue later with --resume)')
    parser.add_argument('overrides', nargs='*', metavar='key=value',
                        help='recipe overrides, values in YAML syntax (checked against TrainConfig)')


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Recipe + overrides; with ``--resume`` and no recipe, the checkpoint's own recipe + overrides."""
    overrides = parse_overrides(args.overrides)
    if args.out is not None:
        overrides['out_dir'] = str(args.out)
    if args.recipe is not None:
        return load_recipe(args.recipe, overrides)
    if not args.resume:
        raise ValueError('--recipe is required (or --resume with --out pointing at an earlier run)')
    if 'out_dir' not in overrides:
        raise ValueError('--resume without --recipe needs --out (the run folder holding last.pt)')
    from .trainer import LAST_CHECKPOINT, load_checkpoint
    saved = load_checkpoint(Path(overrides['out_dir']) / LAST_CHECKPOINT)['config']
    try:
        return TrainConfig.from_dict({**saved, **overrides})
    except ValueError as exc:
        raise ValueError(f'override: {exc}') from exc


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s', stream=sys.stdout)
    try:
        cfg = resolve_config(args)
        if args.stop_after_epochs is not None and args.stop_after_epochs < 1:
            raise ValueError('--stop-after-epochs must be >= 1')
        from .trainer import train
        result = train(cfg, data_root=args.data_root, resume=args.resume, stop_after_epochs=args.stop_after_epochs)
    except (ValueError, FileNotFoundError) as exc:
        print(f'av-snn train: error: {exc}', file=sys.stderr)
        return 2
    if result.get('finished'):
        test = result['test']
        print(f'test accuracy {100 * test["accuracy"]:.2f}% on {test["num_samples"]} samples; '
              f'outputs in {cfg.out_dir} (model card: {result["card"]})')
    return 0
