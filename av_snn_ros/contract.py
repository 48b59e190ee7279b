"""The model I/O contract: tensor names, shapes and layouts every exporter, backend and check shares.

One window per call, time first, batch second, float32:

- inputs ``audio (T, B, 1, Ha, Wa)`` and ``visual (T, B, C, Hv, Wv)``, where T, (Ha, Wa), C and (Hv, Wv)
  come from the model card's :class:`~av_snn_ros.preprocessing.PreprocessConfig`;
- outputs ``logits``, ``audio_logits``, ``visual_logits``, each ``(B, K)`` and time-averaged. A model
  without a head for a modality (a unimodal baseline) still emits that output, as zeros; the card's
  ``modality_heads`` says which outputs carry values.

The exported graph unrolls the T timesteps inside it and starts every membrane at zero, so no neuron
state crosses windows. This module is pure (numpy only) so that anything may import it.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from .preprocessing import PreprocessConfig

#: graph input names, in the order the graph declares them
INPUT_NAMES: tuple[str, ...] = ('audio', 'visual')
#: graph output names, in the order the model returns them
OUTPUT_NAMES: tuple[str, ...] = ('logits', 'audio_logits', 'visual_logits')
#: the fused output: the class decision is its argmax
FUSED_OUTPUT = OUTPUT_NAMES[0]
#: modalities that may have their own head (``<modality>_logits``)
MODALITIES: tuple[str, ...] = INPUT_NAMES
#: axis layouts of the inputs (documentation and error messages)
INPUT_LAYOUTS: dict[str, str] = {'audio': 'T,B,1,H,W', 'visual': 'T,B,C,H,W'}
#: the batch axis of every input (the time axis is 0)
BATCH_AXIS = 1


def head_output(modality: str) -> str:
    """The output name of ``modality``'s own head (``'audio'`` -> ``'audio_logits'``)."""
    if modality not in MODALITIES:
        raise ValueError(f'unknown modality {modality!r}; the contract has {", ".join(MODALITIES)}')
    return f'{modality}_logits'


def real_outputs(modality_heads: Iterable[str] | None) -> tuple[str, ...]:
    """Outputs that carry values for a model with ``modality_heads`` (None: both heads): fused first."""
    heads = tuple(modality_heads) if modality_heads is not None else MODALITIES
    return (FUSED_OUTPUT,) + tuple(head_output(m) for m in MODALITIES if m in heads)


def input_shapes(cfg: PreprocessConfig, batch: int = 1) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Static ``(audio, visual)`` shapes of ``batch`` windows: ``(T,B,1,Ha,Wa)`` and ``(T,B,C,Hv,Wv)``."""
    if batch < 1:
        raise ValueError(f'batch must be >= 1, got {batch}')
    t = cfg.timesteps
    return (t, batch, 1, *cfg.audio_size), (t, batch, cfg.image_channels, *cfg.image_size)


def check_inputs(audio: np.ndarray, visual: np.ndarray,
                 cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """Return contiguous float32 copies-if-needed of the inputs; ``ValueError`` on a shape mismatch."""
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    visual = np.ascontiguousarray(visual, dtype=np.float32)
    if audio.ndim != 5 or visual.ndim != 5:
        raise ValueError(f'inputs must be 5-D (T, B, C, H, W); got audio {audio.shape}, visual {visual.shape}')
    want_a, want_v = input_shapes(cfg, audio.shape[BATCH_AXIS])
    if audio.shape != want_a or visual.shape != want_v:
        raise ValueError(f'input shapes audio {audio.shape}, visual {visual.shape} do not match the model '
                         f'card: expected audio {want_a} ({INPUT_LAYOUTS["audio"]}), visual {want_v} '
                         f'({INPUT_LAYOUTS["visual"]})')
    return audio, visual


def outputs_by_name(values: Sequence[np.ndarray], names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Name a runtime's output list: by ``names`` when they are the contract's, else by contract position.

    An exporter that lost the names (``output_0`` ...) still returns the outputs in contract order.
    """
    if names is not None and set(OUTPUT_NAMES) <= set(names):
        return dict(zip(names, values))
    return dict(zip(OUTPUT_NAMES, values))


def feed(audio: np.ndarray, visual: np.ndarray) -> dict[str, np.ndarray]:
    """The input feed of one call, keyed by the contract's input names."""
    return dict(zip(INPUT_NAMES, (audio, visual)))


def as_outputs(logits: np.ndarray, heads: Mapping[str, np.ndarray | None]) -> dict[str, np.ndarray]:
    """All contract outputs from a fused ``logits`` and per-head values (a missing head is zeros)."""
    out = {FUSED_OUTPUT: logits}
    for name in OUTPUT_NAMES[1:]:
        value = heads.get(name)
        out[name] = value if value is not None else np.zeros_like(logits)
    return out
