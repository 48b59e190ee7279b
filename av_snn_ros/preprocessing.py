"""The one preprocessing path shared by training and the runtime node.

Raw inputs are what a robot delivers after message decoding: mono float32 PCM in [-1, 1] at
``cfg.sample_rate`` covering exactly one window, and ``cfg.timesteps`` camera frames (uint8, HxW gray or
HxWx3 RGB), one per timestep. Outputs follow the project's single input contract, time first:

- audio  ``(T, 1, H_a, W_a)`` float32: the window's log-mel spectrogram cut into T consecutive slices
  (one slice per timestep, so the SNN hears the window in order);
- visual ``(T, C, H_v, W_v)`` float32: each timestep's frame, resized and normalised.

Batching adds a dimension after T: models take ``(T, B, C, H, W)``.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .config import from_dict


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that turns raw audio + frames into model inputs. Stored in every model card."""

    sample_rate: int = 16000          # Hz; audio at other rates is resampled before windowing
    window_s: float = 1.0             # window length W
    timesteps: int = 4                # T
    n_fft: int = 512
    hop_length: int = 125             # samples; 16 kHz / 125 = 128 spectrogram frames per second
    n_mels: int = 32
    f_min: float = 20.0
    f_max: float = 8000.0
    log_floor: float = 1e-6           # log(mel + floor): keeps silence finite
    audio_size: tuple[int, int] = (32, 32)      # (mel bins, frames) per timestep slice
    audio_mean: float = -6.0          # fixed normalisation of log-mel values (not per window:
    audio_std: float = 4.0            # per-window scaling would blow silence up into noise)
    image_size: tuple[int, int] = (32, 32)      # (H, W) of each frame fed to the model
    image_channels: int = 1           # 1 = grayscale, 3 = RGB
    image_mean: float = 0.5
    image_std: float = 0.5

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.window_s <= 0 or self.timesteps <= 0:
            raise ValueError('sample_rate, window_s and timesteps must be positive')
        if self.image_channels not in (1, 3):
            raise ValueError(f'image_channels must be 1 or 3, got {self.image_channels}')
        if self.n_fft < self.hop_length:
            raise ValueError('n_fft must be >= hop_length')
        if self.f_max > self.sample_rate / 2 + 1e-6 or self.f_min < 0 or self.f_min >= self.f_max:
            raise ValueError(f'need 0 <= f_min < f_max <= sample_rate/2, got {self.f_min}, {self.f_max}')
        if self.window_frames < self.timesteps:
            raise ValueError('window too short for the requested timesteps')
        if self.audio_std <= 0 or self.image_std <= 0:
            raise ValueError('audio_std and image_std must be positive')

    @classmethod
    def from_dict(cls, data: dict | None) -> 'PreprocessConfig':
        return from_dict(cls, data)

    @property
    def window_samples(self) -> int:
        """Audio samples in one window."""
        return int(round(self.window_s * self.sample_rate))

    @property
    def window_frames(self) -> int:
        """Spectrogram frames in one window (a multiple of T: the tail that does not divide is dropped)."""
        n = self.window_samples // self.hop_length
        return n - n % self.timesteps

    @property
    def step_s(self) -> float:
        """Duration of one timestep."""
        return self.window_s / self.timesteps

    def step_centers_s(self) -> np.ndarray:
        """Centre of each timestep relative to the window start (where its camera frame is sampled)."""
        return (np.arange(self.timesteps) + 0.5) * self.step_s

    def replace(self, **changes) -> 'PreprocessConfig':
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------------------------- audio

def pcm_to_float(data: bytes | np.ndarray, encoding: str, channels: int) -> np.ndarray:
    """Decode interleaved PCM bytes (``S16LE`` or ``F32LE``) into mono float32 in [-1, 1].

    Raises ``ValueError`` for an unknown encoding, a byte count that is not a whole number of frames,
    or non-finite float samples: callers count and drop such chunks.
    """
    if channels < 1:
        raise ValueError(f'channels must be >= 1, got {channels}')
    enc = encoding.upper()
    if enc in ('S16LE', 'PCM_S16LE', 'S16'):
        dtype, scale = np.dtype('<i2'), 1.0 / 32768.0
    elif enc in ('F32LE', 'PCM_F32LE', 'F32'):
        dtype, scale = np.dtype('<f4'), 1.0
    else:
        raise ValueError(f'unsupported audio encoding {encoding!r} (use S16LE or F32LE)')
    raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    frame_bytes = dtype.itemsize * channels
    if len(raw) % frame_bytes:
        raise ValueError(f'{len(raw)} bytes is not a whole number of {channels}-channel {enc} frames')
    samples = np.frombuffer(raw, dtype=dtype).astype(np.float32) * np.float32(scale)
    if not np.isfinite(samples).all():
        raise ValueError('audio contains NaN or Inf samples')
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return samples


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling (scipy), exact for integer-ratio rates such as 8 kHz -> 16 kHz."""
    if orig_sr == target_sr:
        return audio.astype(np.float32, copy=False)
    from math import gcd

    from scipy.signal import resample_poly
    g = gcd(int(orig_sr), int(target_sr))
    return resample_poly(audio, target_sr // g, orig_sr // g).astype(np.float32)


def fit_length(audio: np.ndarray, n: int, offset: int | None = None) -> np.ndarray:
    """Zero-pad or crop ``audio`` to ``n`` samples, centred unless ``offset`` (start in the output) is given."""
    audio = np.asarray(audio, dtype=np.float32)
    out = np.zeros(n, dtype=np.float32)
    if offset is None:
        offset = (n - len(audio)) // 2
    src_start = max(0, -offset)
    dst_start = max(0, offset)
    count = min(len(audio) - src_start, n - dst_start)
    if count > 0:
        out[dst_start:dst_start + count] = audio[src_start:src_start + count]
    return out


@functools.lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """Triangular mel filters ``(n_mels, n_fft // 2 + 1)`` on the HTK mel scale, area-normalised (Slaney)."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    fft_freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    hz_points = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    lower, centre, upper = hz_points[:-2, None], hz_points[1:-1, None], hz_points[2:, None]
    up = (fft_freqs[None, :] - lower) / (centre - lower)
    down = (upper - fft_freqs[None, :]) / (upper - centre)
    fb = np.maximum(0.0, np.minimum(up, down))
    fb *= (2.0 / (upper - lower))
    fb.setflags(write=False)
    return fb.astype(np.float32)


@functools.lru_cache(maxsize=8)
def _hann(n_fft: int) -> np.ndarray:
    w = np.hanning(n_fft + 1)[:-1].astype(np.float32)  # periodic Hann, as torch.stft/librosa
    w.setflags(write=False)
    return w


def log_mel_spectrogram(audio: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Log-mel spectrogram ``(n_mels, cfg.window_frames)`` of one window of audio.

    Frames are centred (zero padding of n_fft/2 at both ends) so frame ``k`` describes the audio around
    sample ``k * hop_length`` and the window splits into T slices that each describe their own time span.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f'audio must be mono 1-D, got shape {audio.shape}')
    pad = cfg.n_fft // 2
    padded = np.pad(audio, (pad, pad))
    n_frames = cfg.window_frames
    needed = (n_frames - 1) * cfg.hop_length + cfg.n_fft
    if len(padded) < needed:
        padded = np.pad(padded, (0, needed - len(padded)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, cfg.n_fft)[::cfg.hop_length][:n_frames]
    spectrum = np.abs(np.fft.rfft(frames * _hann(cfg.n_fft), axis=1)) ** 2     # (frames, n_fft/2+1)
    mel = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max) @ spectrum.T
    return np.log(mel + cfg.log_floor).astype(np.float32)                      # (n_mels, frames)


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D/3-D array to ``size`` = (H, W); area averaging when shrinking, bilinear otherwise."""
    h, w = size
    if img.shape[0] == h and img.shape[1] == w:
        return img
    import cv2
    shrinking = img.shape[0] >= h and img.shape[1] >= w
    out = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    if img.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    return out


def audio_steps(audio: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """One window of mono audio (exactly ``cfg.window_samples`` samples) -> ``(T, 1, H_a, W_a)`` float32."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.shape != (cfg.window_samples,):
        raise ValueError(f'expected {cfg.window_samples} audio samples, got shape {audio.shape}')
    if not np.isfinite(audio).all():
        raise ValueError('audio window contains NaN or Inf')
    logmel = log_mel_spectrogram(audio, cfg)
    logmel = (logmel - cfg.audio_mean) / cfg.audio_std
    slices = np.split(logmel, cfg.timesteps, axis=1)                 # T x (n_mels, frames/T)
    out = np.stack([_resize(s, cfg.audio_size) for s in slices])     # (T, H_a, W_a)
    return out[:, None].astype(np.float32)                           # (T, 1, H_a, W_a)


# --------------------------------------------------------------------------------------------- visual

def to_model_channels(frame: np.ndarray, channels: int) -> np.ndarray:
    """uint8 frame (HxW, HxWx1 or HxWx3 RGB) -> HxWxchannels uint8 (ITU-R BT.601 luma for gray)."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise ValueError(f'frames must be uint8, got {frame.dtype}')
    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 3):
        raise ValueError(f'frame must be HxW, HxWx1 or HxWx3, got shape {frame.shape}')
    if frame.shape[2] == channels:
        return frame
    if channels == 3:
        return np.repeat(frame, 3, axis=2)
    luma = frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[:, :, None]


def image_steps(frames: Sequence[np.ndarray], cfg: PreprocessConfig) -> np.ndarray:
    """``cfg.timesteps`` uint8 frames -> ``(T, C, H_v, W_v)`` float32, normalised with image_mean/std."""
    if len(frames) != cfg.timesteps:
        raise ValueError(f'expected {cfg.timesteps} frames, got {len(frames)}')
    out = np.empty((cfg.timesteps, cfg.image_channels, *cfg.image_size), dtype=np.float32)
    cache: dict[int, np.ndarray] = {}
    for t, frame in enumerate(frames):
        key = id(frame)
        if key not in cache:   # a static scene repeats one frame over T: convert it once
            img = _resize(to_model_channels(frame, cfg.image_channels), cfg.image_size)
            if img.ndim == 2:
                img = img[:, :, None]
            cache[key] = (img.transpose(2, 0, 1).astype(np.float32) / 255.0 - cfg.image_mean) / cfg.image_std
        out[t] = cache[key]
    return out


def missing_audio_steps(cfg: PreprocessConfig) -> np.ndarray:
    """The model input for "no audio in this window": zeros in the normalised space, ``(T,1,Ha,Wa)``.

    The one definition of a missing sense, shared by training (modality dropout) and the node (a muted or
    lost microphone), so the network is trained on exactly what it is fed when a sensor is gone.
    """
    return np.zeros((cfg.timesteps, 1, *cfg.audio_size), dtype=np.float32)


def missing_image_steps(cfg: PreprocessConfig) -> np.ndarray:
    """The model input for "no camera in this window": zeros in the normalised space, ``(T,C,Hv,Wv)``."""
    return np.zeros((cfg.timesteps, cfg.image_channels, *cfg.image_size), dtype=np.float32)


def preprocess_window(audio: np.ndarray | None, frames: Sequence[np.ndarray] | None,
                      cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """Raw window -> (audio ``(T,1,Ha,Wa)``, visual ``(T,C,Hv,Wv)``), the exact tensors a model sees.

    ``None`` for a sense means it is missing in this window (see :func:`missing_audio_steps`).
    """
    a = missing_audio_steps(cfg) if audio is None else audio_steps(audio, cfg)
    v = missing_image_steps(cfg) if frames is None else image_steps(frames, cfg)
    return a, v
