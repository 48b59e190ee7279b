"""Model cards: the one file that says how to rebuild, feed and trust a shipped model.

A card (``card.yaml``) sits beside its weights and holds the registered model name and arguments, the
preprocessing config (the runtime never re-declares it), the labels, sha256 hashes of every artefact,
and the training provenance and metrics. Loading verifies the hashes so a truncated or tampered file
fails at start-up with a message naming it. A card whose hash for an artefact it lists is empty or
missing is refused the same way: an unchecked file is never loaded, unless the developer opt-out
:data:`ALLOW_UNHASHED_ENV` is set (each such load is logged as a warning).
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import load_yaml
from .contract import MODALITIES
from .decision import DEFAULT_CONFLICT_THRESHOLD
from .preprocessing import PreprocessConfig

log = logging.getLogger(__name__)

#: Development opt-out: ``AV_SNN_ALLOW_UNHASHED_MODEL=1`` loads artefacts whose card hash is empty or
#: missing (a card being edited by hand, a half-written export), with a warning per load. Never on a robot.
ALLOW_UNHASHED_ENV = 'AV_SNN_ALLOW_UNHASHED_MODEL'
_TRUE = ('1', 'true', 'yes', 'on')


def unhashed_models_allowed() -> bool:
    """Whether :data:`ALLOW_UNHASHED_ENV` is set to a true value (``1``, ``true``, ``yes``, ``on``)."""
    return os.environ.get(ALLOW_UNHASHED_ENV, '').strip().lower() in _TRUE


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
             'created', 'description', 'data', 'license')
#: optional keys of the perception contract (no-event, per-modality calibration, conflict, input senses)
CONTRACT_KEYS = ('modalities', 'no_event_label', 'accept_threshold', 'audio_logit_scale',
                  'visual_logit_scale', 'conflict_threshold')


def _hash_value(value: Any) -> str:
    """A card's hash entry as a string; ``''`` for an empty or null entry (refused when checked)."""
    return '' if value is None else str(value).strip()


def _positive_float(value: Any, path: Path, key: str = 'logit_scale') -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ModelFileError(f'{path}: {key} must be a positive number, got {value!r}')
    return float(value)


def _unit_float(value: Any, path: Path, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ModelFileError(f'{path}: {key} must be a number in [0, 1], got {value!r}')
    return float(value)


def _contract_fields(data: dict[str, Any], labels: list[str], logit_scale: float, path: Path) -> dict[str, Any]:
    """The perception-contract keys of a card, validated, with their defaults (see ModelCard)."""
    modalities = data.get('modalities', list(MODALITIES))
    if (not isinstance(modalities, list) or not modalities or len(set(modalities)) != len(modalities)
            or not set(modalities) <= set(MODALITIES)):
        raise ModelFileError(f'{path}: modalities must be a non-empty list of distinct items of '
                             f'{list(MODALITIES)}, got {modalities!r}')
    no_event = data.get('no_event_label')
    if no_event is not None and no_event not in labels:
        raise ModelFileError(f'{path}: no_event_label {no_event!r} is not one of the labels')
    return dict(
        modalities=tuple(m for m in MODALITIES if m in modalities),
        no_event_label=no_event,
        accept_threshold=_unit_float(data.get('accept_threshold', 0.0), path, 'accept_threshold'),
        audio_logit_scale=_positive_float(data.get('audio_logit_scale', logit_scale), path, 'audio_logit_scale'),
        visual_logit_scale=_positive_float(data.get('visual_logit_scale', logit_scale), path,
                                           'visual_logit_scale'),
        conflict_threshold=_unit_float(data.get('conflict_threshold', DEFAULT_CONFLICT_THRESHOLD), path,
                                       'conflict_threshold'))


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
    #: senses the model takes (``[audio]``: an audio-only card; the node then subscribes to audio only)
    modalities: tuple[str, ...] = MODALITIES
    #: the background class ("nothing happening"), one of ``labels``; None: the model has none
    no_event_label: str | None = None
    #: calibrated probability an event needs to be reported (runtime parameter may override)
    accept_threshold: float = 0.0
    #: temperatures of the per-modality heads (None: ``logit_scale``, as in a card without them)
    audio_logit_scale: float | None = None
    visual_logit_scale: float | None = None
    #: both heads at least this confident on different events -> the ``conflict`` flag
    conflict_threshold: float = DEFAULT_CONFLICT_THRESHOLD
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # one default for the head temperatures, whether the card comes from YAML or from code
        if self.audio_logit_scale is None:
            self.audio_logit_scale = self.logit_scale
        if self.visual_logit_scale is None:
            self.visual_logit_scale = self.logit_scale

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
        unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL) - set(CONTRACT_KEYS))
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
        logit_scale = _positive_float(data.get('logit_scale', 1.0), path)
        card = cls(
            path=path, name=str(data['name']), model=str(data['model']), labels=list(labels),
            preprocessing=pre, weights=base / data['weights'], weights_sha256=_hash_value(data['weights_sha256']),
            model_args=dict(data.get('model_args') or {}),
            onnx=(base / data['onnx']) if data.get('onnx') else None,
            onnx_sha256=_hash_value(data.get('onnx_sha256')) or None,
            modality_heads=tuple(data.get('modality_heads') or ('audio', 'visual')),
            logit_scale=logit_scale,
            **_contract_fields(data, list(labels), logit_scale, path),
            extra={k: data[k] for k in _OPTIONAL if k in data and k not in
                   ('model_args', 'onnx', 'onnx_sha256', 'modality_heads', 'logit_scale')},
        )
        if verify:
            card.verify_file(card.weights, 'weights_sha256')
            if card.onnx is not None:
                card._hash_or_refuse(card.onnx, 'onnx_sha256', warn=False)   # a card listing an unhashed ONNX
        return card

    def _hash_or_refuse(self, path: Path, key: str, warn: bool = True) -> str | None:
        """The card's ``key`` hash for ``path``; refuse an empty/missing one unless the opt-out is set."""
        expected = getattr(self, key)
        if expected:
            return expected
        if not unhashed_models_allowed():
            raise ModelFileError(
                f'{self.path}: {key} is empty or missing, so {path} cannot be checked; write its sha256 '
                f'there (`sha256sum {path.name}`) or, for development only, set {ALLOW_UNHASHED_ENV}=1')
        if warn:
            log.warning('%s=1: loading %s WITHOUT a hash check (%s has no %s); never deploy this card',
                        ALLOW_UNHASHED_ENV, path, self.path, key)
        return None

    def verify_file(self, path: Path, key: str, data: bytes | None = None) -> None:
        """Raise :class:`ModelFileError` unless ``path`` exists and matches the card's ``key`` hash.

        ``data``: the file's bytes when the caller already read them (then exactly those bytes are
        checked, so what is loaded is what was verified).
        """
        if data is None and not path.is_file():
            raise ModelFileError(f'model file missing: {path}')
        expected = self._hash_or_refuse(path, key)
        if expected is None:
            return
        actual = hashlib.sha256(data).hexdigest() if data is not None else sha256_file(path)
        if actual != expected:
            raise ModelFileError(f'model file {path} does not match its card (sha256 {actual[:12]}… '
                                 f'!= {expected[:12]}…): truncated, tampered or replaced')

    def verified_onnx(self, path: str | Path | None = None) -> Path:
        """Path of the card's ONNX export after a hash check.

        ``path``: an ONNX named elsewhere (TensorRT's ``model_file_path``). It is accepted when it is
        the card's export (then hash-checked like it) and otherwise only under the opt-out
        :data:`ALLOW_UNHASHED_ENV`: nothing vouches for a file the card does not list.
        """
        if path is not None and (self.onnx is None or Path(path).resolve() != self.onnx.resolve()):
            path = Path(path)
            if not path.is_file():
                raise ModelFileError(f'model file missing: {path}')
            if not unhashed_models_allowed():
                raise ModelFileError(
                    f'{path} is not the ONNX export {self.path} lists and hashes (onnx: {self.onnx}); '
                    f'export it into the card (`av-snn export --card`) or, for development only, set '
                    f'{ALLOW_UNHASHED_ENV}=1')
            log.warning('%s=1: loading %s WITHOUT a hash check (not the ONNX %s lists); never deploy this',
                        ALLOW_UNHASHED_ENV, path, self.path)
            return path
        if self.onnx is None:
            raise ModelFileError(f'{self.path}: the card names no ONNX export (run `av-snn export`)')
        self.verify_file(self.onnx, 'onnx_sha256')
        return self.onnx

    def load_torch_model(self):
        """Rebuild the registered model and load its weights (``torch.load(weights_only=True)``).

        The weights are read once and those bytes are hash-checked and loaded, whether or not the card
        was loaded with ``verify=True`` (no unchecked or swapped-in file reaches ``torch.load``).
        """
        import torch

        from .models.registry import create_model
        try:
            raw = self.weights.read_bytes()
        except FileNotFoundError:
            raise ModelFileError(f'model file missing: {self.weights}') from None
        except OSError as exc:
            raise ModelFileError(f'cannot read weights {self.weights}: {exc}') from exc
        self.verify_file(self.weights, 'weights_sha256', data=raw)
        model = create_model(self.model, num_classes=self.num_classes, **self.model_args)
        try:
            state = torch.load(io.BytesIO(raw), map_location='cpu', weights_only=True)
        except Exception as exc:  # torch raises several types for corrupt archives
            raise ModelFileError(f'cannot load weights {self.weights}: {exc}') from exc
        if isinstance(state, dict) and 'model' in state and isinstance(state['model'], dict):
            state = state['model']
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelFileError(f'weights {self.weights} do not fit model {self.model}: {exc}') from exc
        return model.eval()
