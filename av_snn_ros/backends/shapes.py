"""Input checks shared by the backends: one window batch in the project's time-first contract."""
from __future__ import annotations

import numpy as np

from ..preprocessing import PreprocessConfig


def expected_shapes(cfg: PreprocessConfig, batch: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(audio, visual)`` shapes of ``batch`` windows: ``(T,B,1,Ha,Wa)`` and ``(T,B,C,Hv,Wv)``."""
    t = cfg.timesteps
    return (t, batch, 1, *cfg.audio_size), (t, batch, cfg.image_channels, *cfg.image_size)


def check_inputs(audio: np.ndarray, visual: np.ndarray,
                 cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """Return contiguous float32 copies-if-needed of the inputs; ``ValueError`` on a shape mismatch."""
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    visual = np.ascontiguousarray(visual, dtype=np.float32)
    if audio.ndim != 5 or visual.ndim != 5:
        raise ValueError(f'inputs must be 5-D (T, B, C, H, W); got audio {audio.shape}, visual {visual.shape}')
    want_a, want_v = expected_shapes(cfg, audio.shape[1])
    if audio.shape != want_a or visual.shape != want_v:
        raise ValueError(f'input shapes audio {audio.shape}, visual {visual.shape} do not match the model '
                         f'card: expected audio {want_a}, visual {want_v}')
    return audio, visual
