"""Seeded corruptions of RAW signals for the ``noisy`` evaluation protocol.

They act on what a robot senses (float32 PCM, uint8 camera image) before the shared preprocessing, so a
rosbag recorded from ``AVDigits.raw()`` carries exactly the corruption the model was evaluated on. Each
modality has its own random stream: the audio and image corruptions of one sample are independent.

Audio: additive noise over the whole window at a fixed SNR relative to the *utterance's* mean power
(power of the recording itself, not of the zero padding around it), either white or speech-shaped.
Image: additive Gaussian pixel noise plus random rectangular occlusion patches.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NOISE_KINDS = ('white', 'speech_shaped')   # the noisy protocol's kinds (unchanged: its numbers depend on it)
# Coloured noises for robustness training and idle windows: pink (1/f, fans, HVAC, rain) and brown
# (1/f^2, rumble, traffic, room tone). Their spectra fall below COLOURED_NOISE_MIN_HZ no further.
COLOURED_NOISE_KINDS = ('pink', 'brown')
ALL_NOISE_KINDS = NOISE_KINDS + COLOURED_NOISE_KINDS
COLOURED_NOISE_MIN_HZ = 20.0
# Speech-shaped noise: flat below this corner frequency, falling 6 dB/octave above it, like the long-term
# average spectrum of speech. It overlaps the formants, so it masks digits harder than white noise.
SPEECH_NOISE_CORNER_HZ = 500.0
# A mixture that would exceed full scale is scaled down as a whole (keeps the SNR, avoids clipping).
FULL_SCALE = 0.99
PIXEL_MAX = 255.0


@dataclass(frozen=True)
class AudioCorruption:
    """Additive noise at ``snr_db`` (dB, utterance power / noise power); kind drawn per sample from ``kinds``."""

    snr_db: float = 0.0
    kinds: tuple[str, ...] = NOISE_KINDS

    def __post_init__(self) -> None:
        if not self.kinds or any(k not in ALL_NOISE_KINDS for k in self.kinds):
            raise ValueError(f'noise kinds must be a non-empty subset of {ALL_NOISE_KINDS}, got {self.kinds}')
        if not np.isfinite(self.snr_db):
            raise ValueError('snr_db must be finite')


@dataclass(frozen=True)
class ImageCorruption:
    """Gaussian pixel noise (std in 0-255 units) plus ``patches`` occluding rectangles of random grey level.

    Patch sides are drawn uniformly from ``patch_frac`` (fractions of the image side), positions uniformly
    so that the patch lies inside the image.
    """

    noise_std: float = 0.0
    patches: int = 0
    patch_frac: tuple[float, float] = (0.3, 0.5)

    def __post_init__(self) -> None:
        if self.noise_std < 0 or self.patches < 0:
            raise ValueError('noise_std and patches must be non-negative')
        lo, hi = self.patch_frac
        if not 0 < lo <= hi <= 1:
            raise ValueError(f'patch_frac must satisfy 0 < lo <= hi <= 1, got {self.patch_frac}')


def noise(kind: str, n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise of the given kind, ``n`` samples float32."""
    white = rng.standard_normal(n)
    if kind == 'white':
        out = white
    elif kind == 'speech_shaped':
        freqs = np.fft.rfftfreq(n, d=1.0 / sample_rate)
        shape = 1.0 / np.sqrt(1.0 + (freqs / SPEECH_NOISE_CORNER_HZ) ** 2)   # first-order low-pass
        out = np.fft.irfft(np.fft.rfft(white) * shape, n=n)
    elif kind in COLOURED_NOISE_KINDS:
        freqs = np.maximum(np.fft.rfftfreq(n, d=1.0 / sample_rate), COLOURED_NOISE_MIN_HZ)
        exponent = 0.5 if kind == 'pink' else 1.0        # amplitude ~ f^-1/2 (pink) or f^-1 (brown)
        out = np.fft.irfft(np.fft.rfft(white) * freqs ** -exponent, n=n)
    else:
        raise ValueError(f'unknown noise kind {kind!r}; use one of {ALL_NOISE_KINDS}')
    power = float(np.mean(out ** 2))
    return (out / np.sqrt(max(power, np.finfo(np.float64).tiny))).astype(np.float32)


def signal_power(audio: np.ndarray) -> float:
    """Mean power of an utterance (the recording's own samples, before padding into a window)."""
    audio = np.asarray(audio, dtype=np.float64)
    if audio.size == 0:
        raise ValueError('cannot measure the power of empty audio')
    return float(np.mean(audio ** 2))


def corrupt_audio(window: np.ndarray, utterance_power: float, params: AudioCorruption, sample_rate: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Add noise to a window so that ``utterance_power / noise_power == 10 ** (snr_db / 10)``.

    Returns the corrupted window (float32, peak <= FULL_SCALE; a whole-mixture gain keeps the SNR) and
    the gain applied (1.0 unless the mixture would have clipped).
    """
    window = np.asarray(window, dtype=np.float32)
    kind = params.kinds[int(rng.integers(len(params.kinds)))]
    n = noise(kind, len(window), sample_rate, rng)
    noise_power = utterance_power / 10.0 ** (params.snr_db / 10.0)
    mixed = window + n * np.float32(np.sqrt(noise_power))
    peak = float(np.max(np.abs(mixed))) if mixed.size else 0.0
    gain = FULL_SCALE / peak if peak > FULL_SCALE else 1.0
    return (mixed * np.float32(gain)).astype(np.float32), gain


def corrupt_image(image: np.ndarray, params: ImageCorruption, rng: np.random.Generator) -> np.ndarray:
    """Occlude ``params.patches`` random rectangles, then add Gaussian pixel noise; uint8 in, uint8 out."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f'image must be uint8 HxW or HxWxC, got {image.dtype} {image.shape}')
    out = image.astype(np.float32)
    h, w = image.shape[:2]
    lo, hi = params.patch_frac
    for _ in range(params.patches):
        ph = max(1, int(round(rng.uniform(lo, hi) * h)))
        pw = max(1, int(round(rng.uniform(lo, hi) * w)))
        y = int(rng.integers(0, h - ph + 1))
        x = int(rng.integers(0, w - pw + 1))
        out[y:y + ph, x:x + pw] = rng.uniform(0.0, PIXEL_MAX)
    if params.noise_std > 0:
        out += rng.normal(0.0, params.noise_std, size=out.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, PIXEL_MAX).astype(np.uint8)
