"""Model cards: the one file that says how to rebuild, feed and trust a shipped model.

A card (``card.yaml``) sits beside its weights and holds the registered model name and arguments, the
preprocessing config (the runtime never re-declares it), the labels, sha256 hashes of every artefact,
and the training provenance and metrics. Loading verifies the hashes so a truncated or tampered file
fails at start-up with a message naming it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import load_yaml
from .preprocessing import PreprocessConfig


class ModelFileError(RuntimeError):
    """A model card or one of its artefacts is missing, corrupt or does not match its hash."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as fh:
        for block in iter(lambda: fh.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


_REQUIRED = ('name', 'model', 'labels', 'preprocessing', 'weights', 'weights_sha256')
_OPTIONAL = ('model_args', 'onnx', 'onnx_sha256', 'modality_heads', 'logit_scale', 'training', 'metrics',
             'created', 'description', 'data', 'license',
             # perception contract (docs/models.md): read by the runtime, written by training
             'audio_logit_scale', 'visual_logit_scale', 'no_event_label', 'accept_threshold',
             'conflict_threshold', 'modalities')


def _positive_float(value: Any, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ModelFileError(f'{path}: logit_scale must be a positive number, got {value!r}')
    return float(value)


@dataclass
class ModelCard:
    """Parsed ``card.yaml``; artefact paths are resolved relative to the card's folder."""

    path: Path
    name: str
    model: str
    labels: list[str]
    preprocessing: PreprocessConfig
    weights: Path
    weights_sha256: str
    model_args: dict[str, Any] = field(default_factory=dict)
    onnx: Path | None = None
    onnx_sha256: str | None = None
    modality_heads: tuple[str, ...] = ('audio', 'visual')
    #: scores = softmax(logit_scale * logits). MSE-trained MISNet outputs ~one-hot values in [0, 1], whose
    #: plain softmax is nearly flat; a scale fitted on validation data (temperature scaling) makes the
    #: published confidence a calibrated probability. It never changes the predicted class.
    logit_scale: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> 'ModelCard':
        """Load and (by default) verify a card; raises :class:`ModelFileError` with the reason."""
        path = Path(path)
        if path.is_dir():
            path = path / 'card.yaml'
        try:
            data = load_yaml(path)
        except (FileNotFoundError, ValueError) as exc:
            raise ModelFileError(f'cannot read model card: {exc}') from exc
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise ModelFileError(f'{path}: model card lacks required key(s): {", ".join(missing)}')
        unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL))
        if unknown:
            raise ModelFileError(f'{path}: unknown model card key(s): {", ".join(unknown)}')
        labels = data['labels']
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise ModelFileError(f'{path}: labels must be a non-empty list of strings')
        try:
            pre = PreprocessConfig.from_dict(data['preprocessing'])
        except (ValueError, TypeError) as exc:
            raise ModelFileError(f'{path}: bad preprocessing section: {exc}') from exc
        base = path.parent
        card = cls(
            path=path, name=str(data['name']), model=str(data['model']), labels=list(labels),
            preprocessing=pre, weights=base / data['weights'], weights_sha256=str(data['weights_sha256']),
            model_args=dict(data.get('model_args') or {}),
            onnx=(base / data['onnx']) if data.get('onnx') else None,
            onnx_sha256=data.get('onnx_sha256'),
            modality_heads=tuple(data.get('modality_heads') or ('audio', 'visual')),
            logit_scale=_positive_float(data.get('logit_scale', 1.0), path),
            extra={k: data[k] for k in _OPTIONAL if k in data and k not in
                   ('model_args', 'onnx', 'onnx_sha256', 'modality_heads', 'logit_scale')},
        )
        if verify:
            card.verify_file(card.weights, card.weights_sha256)
        return card

    @staticmethod
    def verify_file(path: Path, expected_sha256: str | None) -> None:
        """Raise :class:`ModelFileError` unless ``path`` exists and matches ``expected_sha256``."""
        if not path.is_file():
            raise ModelFileError(f'model file missing: {path}')
        if expected_sha256:
            actual = sha256_file(path)
            if actual != expected_sha256:
                raise ModelFileError(f'model file {path} does not match its card (sha256 {actual[:12]}… '
                                     f'!= {expected_sha256[:12]}…): truncated, tampered or replaced')

    def verified_onnx(self) -> Path:
        """Path of the card's ONNX export after a hash check."""
        if self.onnx is None:
            raise ModelFileError(f'{self.path}: the card names no ONNX export (run `av-snn export`)')
        self.verify_file(self.onnx, self.onnx_sha256)
        return self.onnx

    def load_torch_model(self):
        """Rebuild the registered model and load its weights (``torch.load(weights_only=True)``)."""
        import torch

        from .models.registry import create_model
        model = create_model(self.model, num_classes=self.num_classes, **self.model_args)
        try:
            state = torch.load(self.weights, map_location='cpu', weights_only=True)
        except Exception as exc:  # torch raises several types for corrupt archives
            raise ModelFileError(f'cannot load weights {self.weights}: {exc}') from exc
        if isinstance(state, dict) and 'model' in state and isinstance(state['model'], dict):
            state = state['model']
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelFileError(f'weights {self.weights} do not fit model {self.model}: {exc}') from exc
        return model.eval()
