"""PNG plots of a replay report: confusion matrix and latency histogram (matplotlib, no display)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

LATENCY_BINS = 40
FIG_DPI = 120


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')   # headless: robots and CI have no display
    import matplotlib.pyplot as plt
    return plt


def plot_confusion(cm: Sequence[Sequence[int]], row_labels: Sequence[str], col_labels: Sequence[str],
                   path: str | Path, title: str = 'Replay confusion matrix') -> Path:
    """Save a confusion matrix (rows = true class, columns = predicted or 'missed') as PNG."""
    plt = _pyplot()
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(col_labels), 1.0 + 0.5 * len(row_labels)))
    im = ax.imshow(cm, cmap='Blues')
    ax.set_xticks(range(len(col_labels)), labels=col_labels, rotation=45, ha='right')
    ax.set_yticks(range(len(row_labels)), labels=row_labels)
    ax.set_xlabel('predicted')
    ax.set_ylabel('true')
    ax.set_title(title)
    threshold = cm.max() / 2 if cm.size and cm.max() > 0 else 0
    for (i, j), value in np.ndenumerate(cm):
        if value:
            ax.text(j, i, str(value), ha='center', va='center',
                    color='white' if value > threshold else 'black', fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=FIG_DPI)
    plt.close(fig)
    return path


def plot_latency(latencies_s: Sequence[float], path: str | Path,
                 title: str = 'Classification latency (window complete -> received)') -> Path:
    """Save a histogram of latencies (milliseconds) with p50/p95/p99 markers as PNG."""
    plt = _pyplot()
    ms = np.asarray([v for v in latencies_s if v is not None and np.isfinite(v)], dtype=np.float64) * 1e3
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if ms.size:
        ax.hist(ms, bins=LATENCY_BINS, color='tab:blue', alpha=0.8)
        for q, style in ((50, '-'), (95, '--'), (99, ':')):
            value = float(np.percentile(ms, q))
            ax.axvline(value, color='black', linestyle=style, label=f'p{q} = {value:.1f} ms')
        ax.legend()
    else:
        ax.text(0.5, 0.5, 'no classifications received', ha='center', va='center', transform=ax.transAxes)
    ax.set_xlabel('latency [ms]')
    ax.set_ylabel('classifications')
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=FIG_DPI)
    plt.close(fig)
    return path
