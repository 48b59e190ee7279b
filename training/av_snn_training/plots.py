"""Training plots (PNG): loss/accuracy curves and a confusion matrix.

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
