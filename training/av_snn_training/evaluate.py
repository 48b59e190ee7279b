"""Evaluation shared by ``av-snn train`` (validation, final test) and ``av-snn eval``.

Everything here is a pure function of a model and a data set: no files, no logging. Predictions use
``model(audio, visual)``, the inference path the runtime backends export, so the accuracy reported for a
model card is the accuracy of what ships.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

MODALITIES = ('audio', 'visual')


def time_first(audio: torch.Tensor, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Collated ``(B, T, C, H, W)`` batches -> the model contract ``(T, B, C, H, W)``."""
    if audio.ndim != 5 or visual.ndim != 5:
        raise ValueError(f'expected 5-D batches (B, T, C, H, W), got audio {tuple(audio.shape)} '
                         f'and visual {tuple(visual.shape)}')
    return audio.transpose(0, 1).contiguous(), visual.transpose(0, 1).contiguous()


@dataclass
class Predictions:
    """Raw outputs over a data set, in data set order."""

    targets: np.ndarray          # (N,) int64
    logits: np.ndarray           # (N, K) fused
    audio_logits: np.ndarray     # (N, K); zeros for a model without an audio head
    visual_logits: np.ndarray    # (N, K)
    loss: float | None = None    # mean loss per sample, when a loss function was given

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(axis=1)


@torch.no_grad()
def predict(model: torch.nn.Module, batches: Iterable, device: torch.device | str = 'cpu',
            max_batches: int | None = None,
            loss_fn: Callable[[dict, torch.Tensor], tuple[torch.Tensor, dict]] | None = None) -> Predictions:
    """Run ``model`` in eval mode over ``batches`` of ``(audio, visual, label)`` (batch first, collated).

    Predictions come from ``model(audio, visual)``, the exported inference path. With ``loss_fn`` the
    pass goes through ``model.forward_train`` instead (whose logits are, by the model contract, the same)
    to also compute the training objective on held-out data.
    """
    was_training = model.training
    model.eval()
    targets, fused, audio_out, visual_out = [], [], [], []
    loss_sum, count = 0.0, 0
    try:
        for i, (audio, visual, label) in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            audio, visual = time_first(audio.to(device), visual.to(device))
            label = torch.as_tensor(label, device=device)
            if loss_fn is None:
                logits, a_logits, v_logits = model(audio, visual)
            else:   # one pass: forward_train's logits are forward's (model contract)
                out = model.forward_train(audio, visual)
                logits, a_logits, v_logits = out['logits'], out['audio_logits'], out['visual_logits']
                loss, _ = loss_fn(out, label)
                loss_sum += float(loss) * len(label)
            count += len(label)
            targets.append(label.cpu())
            fused.append(logits.float().cpu())
            audio_out.append(a_logits.float().cpu())
            visual_out.append(v_logits.float().cpu())
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError('no samples to evaluate (empty data set or max_batches=0)')
    return Predictions(targets=torch.cat(targets).numpy().astype(np.int64), logits=torch.cat(fused).numpy(),
                       audio_logits=torch.cat(audio_out).numpy(), visual_logits=torch.cat(visual_out).numpy(),
                       loss=loss_sum / count if loss_fn is not None else None)


def confusion_matrix(targets: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[true, predicted]`` counts, ``(K, K)`` int64."""
    targets, predictions = np.asarray(targets), np.asarray(predictions)
    if targets.shape != predictions.shape:
        raise ValueError(f'targets {targets.shape} and predictions {predictions.shape} differ in shape')
    if targets.size and (targets.min() < 0 or targets.max() >= num_classes or predictions.min() < 0
                         or predictions.max() >= num_classes):
        raise ValueError(f'class index outside [0, {num_classes})')
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (targets, predictions), 1)
    return cm


def summarize(pred: Predictions, labels: Sequence[str],
              modality_heads: Sequence[str] = MODALITIES) -> dict[str, Any]:
    """Accuracy, per-class recall, per-modality accuracy and confusion matrix as plain JSON types.

    Per-modality accuracy is ``None`` for a modality the model has no head for (its logits are zeros,
    so their argmax would report a meaningless "accuracy" of class 0's frequency).
    """
    num_classes = len(labels)
    if pred.logits.shape[1] != num_classes:
        raise ValueError(f'model has {pred.logits.shape[1]} outputs but {num_classes} labels were given')
    cm = confusion_matrix(pred.targets, pred.predictions, num_classes)
    support = cm.sum(axis=1)
    recall = {label: (float(cm[k, k] / support[k]) if support[k] else None) for k, label in enumerate(labels)}
    out: dict[str, Any] = {
        'num_samples': int(len(pred.targets)),
        'accuracy': float(np.trace(cm) / max(1, cm.sum())),
        'per_class_recall': recall,
        'confusion_matrix': cm.tolist(),
    }
    for name, logits in (('audio', pred.audio_logits), ('visual', pred.visual_logits)):
        out[f'{name}_accuracy'] = (float(np.mean(logits.argmax(axis=1) == pred.targets))
                                   if name in modality_heads else None)
    if pred.loss is not None:
        out['loss'] = float(pred.loss)
    return out


def sample_records(dataset: Any, pred: Predictions, labels: Sequence[str]) -> list[dict[str, Any]]:
    """One record per sample (data set order): its source files, label, prediction and fused logits.

    For AV digits this names the FSDD file and MNIST image index, so a rosbag replay of the same samples
    can be checked against these predictions one by one. Other data sets give the sample index only.
    """
    recordings = getattr(dataset, 'recordings', None)
    image_indices = getattr(dataset, 'image_indices', None)
    records = []
    for i, (target, logits) in enumerate(zip(pred.targets, pred.logits)):
        record: dict[str, Any] = {'index': i}
        if recordings is not None and image_indices is not None:
            record['audio_file'] = recordings[i].path.name
            record['speaker'] = recordings[i].speaker
            record['image_index'] = int(image_indices[i])
        record.update(label=int(target), prediction=int(logits.argmax()),
                      label_name=labels[int(target)], prediction_name=labels[int(logits.argmax())],
                      logits=[round(float(x), 6) for x in logits])
        records.append(record)
    return records
