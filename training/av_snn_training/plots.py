"""Training reports: PNG plots (loss/accuracy curves, confusion matrix) and the Markdown model card.

Figures are drawn on matplotlib's Agg canvas directly (``matplotlib.figure.Figure``), so plotting never
touches pyplot's global backend state and works on headless machines and in DDP rank-0 processes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

FIGURE_DPI = 110
CURVES_SIZE_IN = (10.0, 4.0)
CONFUSION_SIZE_IN = (5.5, 5.0)
# Cells darker than this fraction of the colour scale get white text.
TEXT_CONTRAST_FRACTION = 0.5


def _save(fig: Any, path: str | Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=FIGURE_DPI, bbox_inches='tight')
    return path


def plot_curves(history: Sequence[dict[str, Any]], path: str | Path, title: str = '') -> Path:
    """Loss (train/val) and accuracy (train, val fused and per modality) per epoch."""
    from matplotlib.figure import Figure
    if not history:
        raise ValueError('no epochs to plot')
    epochs = [h['epoch'] for h in history]
    fig = Figure(figsize=CURVES_SIZE_IN)
    ax_loss, ax_acc = fig.subplots(1, 2)

    def series(key: str) -> list[float] | None:
        values = [h.get(key) for h in history]
        return None if all(v is None for v in values) else [np.nan if v is None else v for v in values]

    for key, label in (('train_loss', 'train'), ('val_loss', 'val')):
        if (ys := series(key)) is not None:
            ax_loss.plot(epochs, ys, marker='o', label=label)
    ax_loss.set(xlabel='epoch', ylabel='loss', title='loss')
    for key, label, style in (('train_accuracy', 'train', '-'), ('val_accuracy', 'val fused', '-'),
                              ('val_audio_accuracy', 'val audio head', '--'),
                              ('val_visual_accuracy', 'val visual head', '--')):
        if (ys := series(key)) is not None:
            ax_acc.plot(epochs, [100.0 * y for y in ys], style, marker='o', label=label)
    ax_acc.set(xlabel='epoch', ylabel='accuracy (%)', title='accuracy', ylim=(0, 100))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(loc='best', fontsize='small')
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path,
                   title: str = '') -> Path:
    """Confusion matrix (rows: true class, columns: prediction) with counts in the cells."""
    from matplotlib.figure import Figure
    cm = np.asarray(matrix)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(labels):
        raise ValueError(f'confusion matrix of shape {cm.shape} does not match {len(labels)} labels')
    fig = Figure(figsize=CONFUSION_SIZE_IN)
    ax = fig.subplots()
    image = ax.imshow(cm, cmap='Blues', vmin=0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels=list(labels))
    ax.set_yticks(ticks, labels=list(labels))
    ax.set(xlabel='predicted', ylabel='true', title=title or 'confusion matrix')
    threshold = cm.max() * TEXT_CONTRAST_FRACTION if cm.size else 0
    for (r, c), count in np.ndenumerate(cm):
        if count:
            ax.text(c, r, str(count), ha='center', va='center', fontsize='small',
                    color='white' if count > threshold else 'black')
    return _save(fig, path)


# ------------------------------------------------------------------------------------- model card text

def _pct(x: float | None) -> str:
    return 'n/a' if x is None else f'{100 * x:.2f} %'


def render_model_card(metrics: dict[str, Any], attribution: str | None = None) -> str:
    """``MODEL_CARD.md`` for a finished run, from its ``metrics.json`` content (everything is measured)."""
    import yaml
    cfg, data, test, best = metrics['config'], metrics['data'], metrics['test'], metrics['best']
    labels = metrics['labels']
    name = cfg.get('card_name') or f'{cfg["dataset"]}_{cfg["model"]}'
    recipe = {k: v for k, v in cfg.items() if k not in ('data_root', 'out_dir')}   # machine-specific paths
    lines = [
        f'# Model card: {name}', '',
        (cfg.get('description') or f'{cfg["model"]} trained on {cfg["dataset"]}').strip(), '',
        '| | |', '|---|---|',
        f'| Model | `{cfg["model"]}` (registry name), {metrics["parameters"]:,} parameters, '
        f'model_args `{cfg["model_args"] or {}}` |',
        f'| Classes | {len(labels)}: {", ".join(labels)} |',
        f'| Modality heads | {", ".join(metrics["modality_heads"])} |',
        f'| Inputs | the `preprocessing` section of card.yaml (shared runtime preprocessing) |',
        f'| Created | {metrics["created"]} from git revision `{metrics.get("git_revision") or "unknown"}` |',
        '', '## Data', '',
        f'- Data set `{data["dataset"]}`, protocol `{data["protocol"]}`.',
    ]
    if data.get('train_speakers'):
        lines.append(f'- Training speakers: {", ".join(data["train_speakers"])} '
                     f'({data.get("train_samples", "?")} training windows, {data.get("val_samples", "?")} '
                     'validation windows held out from the same speakers).')
    elif 'train_samples' in data:
        lines.append(f'- {data["train_samples"]} training and {data["val_samples"]} validation samples.')
    if data.get('test_speakers'):
        lines.append(f'- Test: held-out speaker(s) {", ".join(data["test_speakers"])}, never heard in training, '
                     f'{test["num_samples"]} windows evaluated; images from MNIST '
                     f'`{data.get("test_image_source", "?")}`.')
    else:
        lines.append(f'- Test: {test["num_samples"]} samples of the test split.')
    lines += [
        '', '## Training', '',
        f'- {cfg["epochs"]} epochs of {data.get("steps_per_epoch", "?")} steps, global batch {cfg["batch_size"]}, '
        f'{cfg["optimizer"]} lr {cfg["lr"]} ({cfg["lr_schedule"]} to {cfg["lr_min"]}), loss `{cfg["loss"]}`'
        f'{" " + str(cfg["loss_args"]) if cfg["loss_args"] else ""}, seed {cfg["seed"]}.',
        f'- Best epoch by validation accuracy: {best["epoch"]} ({_pct(best["val_accuracy"])}); its weights '
        'are the ones shipped.',
        '- Full recipe (reproduce with `av-snn train --recipe <this as YAML> --data-root DATA`):', '',
        '```yaml', yaml.safe_dump(recipe, sort_keys=False).rstrip(), '```',
        '', '## Results on the test split', '',
        '| metric | value |', '|---|---|',
        f'| fused accuracy | {_pct(test["accuracy"])} |',
        f'| audio head accuracy | {_pct(test["audio_accuracy"])} |',
        f'| visual head accuracy | {_pct(test["visual_accuracy"])} |',
        f'| samples | {test["num_samples"]} |',
        '', 'Per-class recall of the fused output (%):', '',
        '| ' + ' | '.join(labels) + ' |', '|' + '---|' * len(labels),
        '| ' + ' | '.join('n/a' if (r := test['per_class_recall'][k]) is None else f'{100 * r:.1f}'
                          for k in labels) + ' |',
        '', 'Confusion matrix (rows: true class, columns: prediction):', '',
        '| | ' + ' | '.join(labels) + ' |', '|---|' + '---|' * len(labels),
    ]
    lines += [f'| **{label}** | ' + ' | '.join(str(c) for c in row) + ' |'
              for label, row in zip(labels, test['confusion_matrix'])]
    lines += [
        '', '## Intended use and limitations', '',
        '- Demonstration and regression model for the av_snn_ros pipeline: one spoken digit and one '
        'handwritten digit per window. It is not a general speech or vision model.',
        '- The audio and visual heads are auxiliary training heads; the runtime decision is the fused output.',
        '- Accuracy is measured on one held-out voice; other voices, microphones and cameras will differ.',
    ]
    if attribution:
        lines += ['', '## Attribution and licences', '', f'Trained on: {attribution}. Keep this attribution '
                  'with copies of the weights.']
    return '\n'.join(lines) + '\n'
