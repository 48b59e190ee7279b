"""Small WAV reader: stdlib ``wave`` for integer PCM, scipy for the formats ``wave`` refuses.

Returns mono float32 in [-1, 1] and the file's sample rate. Corrupt, truncated or unsupported files raise
``ValueError`` naming the path, so a data loader can report exactly which file is broken.
"""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

# Integer PCM sample widths (bytes) -> (numpy dtype, full-scale divisor). 8-bit WAV is unsigned.
_INT_WIDTHS = {1: ('u1', 128.0), 2: ('<i2', 32768.0), 4: ('<i4', 2147483648.0)}
_INT24_SCALE = 8388608.0


def _int_pcm_to_float(raw: bytes, width: int, channels: int) -> np.ndarray:
    """Interleaved little-endian integer PCM -> (frames, channels) float32 in [-1, 1]."""
    if width == 3:   # no 24-bit numpy dtype: sign-extend three bytes into int32
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        samples = ints.astype(np.float32) / np.float32(_INT24_SCALE)
    else:
        dtype, scale = _INT_WIDTHS[width]
        samples = np.frombuffer(raw, dtype=dtype).astype(np.float32)
        if width == 1:
            samples -= np.float32(scale)
        samples /= np.float32(scale)
    return samples.reshape(-1, channels)


def _read_with_scipy(path: Path) -> tuple[np.ndarray, int]:
    """Float / WAVE_FORMAT_EXTENSIBLE files (common in UrbanSound8K), which Python 3.11's wave rejects."""
    from scipy.io import wavfile
    try:
        rate, data = wavfile.read(path)
    except (ValueError, EOFError, OSError) as exc:
        raise ValueError(f'{path}: not a readable WAV file ({exc})') from exc
    data = np.asarray(data)
    if data.dtype.kind == 'f':
        samples = data.astype(np.float32)
    elif data.dtype == np.uint8:
        samples = (data.astype(np.float32) - 128.0) / 128.0
    elif data.dtype.kind == 'i':
        # scipy left-justifies 24-bit samples into int32, so the int32 full scale applies.
        samples = data.astype(np.float32) / np.float32(-float(np.iinfo(data.dtype).min))
    else:
        raise ValueError(f'{path}: unsupported WAV sample type {data.dtype}')
    if samples.ndim == 2:
        samples = samples.reshape(samples.shape[0], -1)
    else:
        samples = samples.reshape(-1, 1)
    return samples, int(rate)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a WAV file as mono float32 (channels averaged) and its sample rate.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a valid/complete WAV, is empty, or holds non-finite samples.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'WAV file not found: {path}')
    try:
        with wave.open(str(path), 'rb') as wf:
            channels, width, rate, n_frames = (wf.getnchannels(), wf.getsampwidth(), wf.getframerate(),
                                               wf.getnframes())
            raw = wf.readframes(n_frames)
    except wave.Error as exc:
        if 'unknown format' not in str(exc):
            raise ValueError(f'{path}: not a valid WAV file ({exc})') from exc
        samples, rate = _read_with_scipy(path)   # float or extensible PCM
    except EOFError as exc:
        raise ValueError(f'{path}: truncated WAV header') from exc
    else:
        if channels < 1 or width not in (1, 2, 3, 4) or rate <= 0:
            raise ValueError(f'{path}: unsupported WAV format (channels={channels}, '
                             f'sample width={width} bytes, rate={rate})')
        frame_bytes = channels * width
        if len(raw) < n_frames * frame_bytes:
            raise ValueError(f'{path}: truncated WAV data ({len(raw)} of {n_frames * frame_bytes} bytes)')
        samples = _int_pcm_to_float(raw, width, channels)
    if samples.shape[0] == 0:
        raise ValueError(f'{path}: WAV file has no audio samples')
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if not np.isfinite(mono).all():
        raise ValueError(f'{path}: WAV file contains NaN or Inf samples')
    return np.ascontiguousarray(mono, dtype=np.float32), rate


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono float audio in [-1, 1] as 16-bit PCM (test fixtures, debugging dumps)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f'audio must be mono 1-D, got shape {audio.shape}')
    pcm = np.clip(np.rint(audio * 32767.0), -32768, 32767).astype('<i2')
    with wave.open(str(path), 'wb') as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(int(sample_rate))
        wf.writeframes(pcm.tobytes())
