"""Confidence calibration of a model card by temperature scaling (Guo et al., 2017).

MSE-trained MISNet outputs time-averaged values close to a one-hot vector, so a plain softmax over them
is nearly flat (a correct answer shows ~20 % "confidence"). One scalar ``s`` with scores =
softmax(s * logits), fitted on validation data by minimising the negative log-likelihood, turns the
published confidence into a calibrated probability without changing any prediction.

usage: av-snn eval --card CARD --split val --json val.json
       python -m av_snn_training.calibration --card CARD --eval-json val.json
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

SCALE_BOUNDS = (0.01, 1000.0)   # search range of the scale (log-spaced)


def _nll(logits: np.ndarray, labels: np.ndarray, scale: float) -> float:
    z = logits * scale
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


def expected_calibration_error(logits: np.ndarray, labels: np.ndarray, scale: float, bins: int = 10) -> float:
    """ECE: |accuracy - confidence| averaged over equal-width confidence bins, weighted by bin size."""
    z = logits * scale
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs((pred[in_bin] == labels[in_bin]).mean() - conf[in_bin].mean())
    return float(ece)


def fit_logit_scale(logits: np.ndarray, labels: np.ndarray) -> float:
    """The scale in :data:`SCALE_BOUNDS` minimising the NLL (golden-section search on log scale)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(f'need (N, K) logits and N labels, got {logits.shape} and {labels.shape}')
    lo, hi = np.log(SCALE_BOUNDS[0]), np.log(SCALE_BOUNDS[1])
    golden = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    fa, fb = _nll(logits, labels, np.exp(a)), _nll(logits, labels, np.exp(b))
    for _ in range(80):   # the NLL is convex in the scale, so this converges to the optimum
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - golden * (hi - lo)
            fa = _nll(logits, labels, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + golden * (hi - lo)
            fb = _nll(logits, labels, np.exp(b))
    return float(np.exp((lo + hi) / 2))


def softmax(logits: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``scale * logits`` (float64)."""
    z = np.asarray(logits, dtype=np.float64) * scale
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


#: the share of validation idle windows allowed to be reported as an event when choosing the threshold
IDLE_FALSE_EVENT_RATE = 0.01
THRESHOLD_GRID = np.round(np.arange(0.0, 1.0, 0.01), 2)


def fit_accept_threshold(probs: np.ndarray, targets: np.ndarray, labels: list[str],
                         no_event_label: str | None) -> float:
    """The card's ``accept_threshold``: the smallest threshold on :data:`THRESHOLD_GRID` at which at most
    :data:`IDLE_FALSE_EVENT_RATE` of the validation *idle* windows (target = the no-event class) are
    reported as an event by :func:`av_snn_ros.decision.decide` (the runtime's own decision). The smallest
    such threshold keeps the most real events; 0.0 when the model has no background class or the idle
    windows are already rejected without a threshold."""
    from av_snn_ros.decision import decide, no_event_index
    background = no_event_index(labels, no_event_label)
    if background is None:
        return 0.0
    idle = np.asarray(probs)[np.asarray(targets) == background]
    if len(idle) == 0:
        raise ValueError('no idle windows in the validation data: cannot choose an acceptance threshold')
    for t in THRESHOLD_GRID:
        events = sum(decide(p, labels, no_event_label, float(t)).is_event for p in idle)
        if events <= IDLE_FALSE_EVENT_RATE * len(idle):
            return float(t)
    return float(THRESHOLD_GRID[-1])


def write_logit_scale(card_path: Path, scale: float) -> None:
    """Set ``logit_scale`` in a card.yaml, leaving every other line as it is."""
    text = card_path.read_text()
    line = f'logit_scale: {scale:.6g}'
    if re.search(r'^logit_scale:.*$', text, flags=re.M):
        text = re.sub(r'^logit_scale:.*$', line, text, flags=re.M)
    else:
        text = text.rstrip('\n') + '\n' + line + '\n'
    card_path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--card', type=Path, required=True, help='card.yaml (or its folder) to update')
    parser.add_argument('--eval-json', type=Path, required=True,
                        help='report of `av-snn eval --split val` for this card (logits + labels per sample)')
    args = parser.parse_args(argv)
    from av_snn_ros.model_card import ModelCard
    card = ModelCard.load(args.card)
    report = json.loads(args.eval_json.read_text())
    if report.get('data', {}).get('split') == 'test':
        parser.error('calibrate on validation data (--split val), never on the test split')
    logits = np.array([s['logits'] for s in report['samples']], dtype=np.float64)
    labels = np.array([s['label'] for s in report['samples']], dtype=np.int64)
    scale = fit_logit_scale(logits, labels)
    for name, s in (('before', card.logit_scale), ('after', scale)):
        print(f'{name}: logit_scale {s:.4g}, NLL {_nll(logits, labels, s):.4f}, '
              f'ECE {expected_calibration_error(logits, labels, s):.4f}')
    write_logit_scale(card.path, scale)
    ModelCard.load(card.path)   # still a valid card
    print(f'wrote logit_scale {scale:.6g} to {card.path}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
