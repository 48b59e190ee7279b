"""How much context does speech emotion need? A quick, model-independent probe on RAVDESS.

For each window length, the shared front end (av_snn_ros.preprocessing) turns the centred window of
every clip into the normalised log-mel input; a multinomial logistic regression on per-mel-bin
statistics (mean, std, std of the frame-to-frame delta) is trained on the training actors and scored on
the validation actors (17, 18) only: the test actors are never looked at. Prints one line per window.

usage: PYTHONPATH=.:training python scripts/emotion_window_probe.py [--data-root ../shared/data] [--windows 1 2 3]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from av_snn_ros.preprocessing import PreprocessConfig, preprocess_window
from av_snn_training.data.ravdess import Ravdess


def features(ds: Ravdess) -> tuple[torch.Tensor, torch.Tensor]:
    rows = []
    for i in range(len(ds)):
        a, _ = preprocess_window(ds.raw(i), None, ds.cfg)          # (T, 1, H, W)
        spec = np.concatenate(list(a[:, 0]), axis=1)                # (H, T*W): the whole window
        delta = np.diff(spec, axis=1)
        rows.append(np.concatenate([spec.mean(1), spec.std(1), delta.std(1)]))
    return torch.tensor(np.stack(rows), dtype=torch.float32), torch.tensor(ds.labels)


def probe(x_tr, y_tr, x_va, y_va, classes: int = 8, l2: float = 1e-2) -> float:
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr, x_va = (x_tr - mu) / sd, (x_va - mu) / sd
    w = torch.zeros(x_tr.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn='strong_wolfe')

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x_tr @ w + b, y_tr) + l2 * w.square().sum()
        loss.backward()
        return loss
    opt.step(closure)
    return float(((x_va @ w + b).argmax(1) == y_va).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-root', type=Path, default=Path('../shared/data'))
    parser.add_argument('--windows', type=float, nargs='+', default=[1.0, 2.0, 3.0])
    args = parser.parse_args()
    torch.set_num_threads(1)
    for window in args.windows:
        cfg = PreprocessConfig(window_s=window)
        tr, va = Ravdess(args.data_root, 'train', cfg), Ravdess(args.data_root, 'val', cfg)
        acc = probe(*features(tr), *features(va))
        print(f'window {window:.1f} s: val accuracy (actors {",".join(va.speakers)}) {100 * acc:.1f} %', flush=True)


if __name__ == '__main__':
    main()
