"""Robustness training shared by every task (AV digits, RAVDESS emotion): one module, one set of options.

:class:`RobustDataset` wraps an *event source* (a data set exposing ``event(i) -> Event``, ``labels`` and
``cfg``) and builds each training window itself from the clean event, the way a robot would sense it:

- **audio**: speed perturbation (resampling: speed and pitch change together, as Kaldi's speed
  perturbation), gain, a random position in the window (jitter, long clips cropped at random), events
  that start part-way through the window (``onset_prob``; the camera shows an idle frame before the
  onset), additive noise over a wide SNR range (white, speech-shaped, pink, brown), and always a
  realistic noise floor (a microphone never delivers digital zeros); SpecAugment-style frequency and
  time masks on the normalised log-mel input;
- **visual**: shift, scale, contrast/brightness and inversion;
- **idle windows** (``idle_fraction`` of the data set size, label = the no-event class ``none``):
  silence with a noise floor, room noise, loud noise; with black, grey, white or noise frames;
- **modality dropout** (AV models): a missing sense is fed exactly as the node feeds it,
  :func:`av_snn_ros.preprocessing.missing_audio_steps` / :func:`missing_image_steps`.

Every draw comes from ``numpy.random.default_rng([seed, stream, epoch, index])``: a run is a function
of its recipe, and epoch ``e`` redraws the augmentation. The ``val`` mode is a fixed calibration /
model-selection mix (clean, noisy and idle windows, epoch-independent); ``clean`` passes the event
source's own items through (the historical benchmark) with the ``none`` class appended to the labels.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch

from av_snn_ros.decision import NO_EVENT_LABEL
from av_snn_ros.preprocessing import PreprocessConfig, missing_audio_steps, missing_image_steps, preprocess_window

from .corruptions import ALL_NOISE_KINDS, FULL_SCALE, PIXEL_MAX, noise, signal_power

MODES = ('train', 'val', 'clean')
IDLE_AUDIO_KINDS = ('silence', 'room', 'noise')
IDLE_FRAME_KINDS = ('black', 'grey', 'white', 'noise')
# Speed factors as exact resampling ratios (up, down): small integers keep resample_poly cheap.
SPEED_RATIOS = {0.9: (10, 9), 0.95: (20, 19), 1.05: (20, 21), 1.1: (10, 11)}
_STREAM_EVENT, _STREAM_IDLE, _STREAM_VAL_ORDER = 11, 12, 13


class Event(NamedTuple):
    """One clean event as an event source delivers it (before any window is cut)."""

    audio: np.ndarray | None     # float32 mono utterance at cfg.sample_rate (any length), None: no audio
    image: np.ndarray | None     # uint8 frame shown during the event, None: no camera modality
    label: int


@dataclass(frozen=True)
class AugmentConfig:
    """Robustness options (recipe key ``augment``: a mapping of these fields; ``{}`` = all defaults)."""

    # --- audio events
    snr_db: tuple[float, float] = (-5.0, 30.0)        # additive noise SNR range (utterance power / noise)
    noise_prob: float = 0.7                            # share of event windows that get additive noise
    noise_kinds: tuple[str, ...] = ALL_NOISE_KINDS
    floor_dbfs: tuple[float, float] = (-80.0, -50.0)   # RMS of the always-present microphone floor
    gain_db: tuple[float, float] = (-12.0, 6.0)        # speaker distance / microphone gain
    speed_prob: float = 0.5                            # share with speed perturbation (SPEED_RATIOS)
    onset_prob: float = 0.2                            # event starts part-way through the window ...
    onset_frac: tuple[float, float] = (0.25, 0.6)      # ... at this fraction of the window
    spec_prob: float = 0.5                             # share with SpecAugment masks
    freq_masks: int = 2
    freq_mask_max: int = 6                             # mel bins per mask
    time_masks: int = 2
    time_mask_max_frac: float = 0.1                    # of the window's spectrogram frames, per mask
    # --- visual events
    image_prob: float = 0.8                            # share of windows with image augmentation
    shift_frac: float = 0.15
    scale: tuple[float, float] = (0.8, 1.2)
    contrast: tuple[float, float] = (0.5, 1.5)
    brightness: float = 40.0                           # +- grey levels
    invert_prob: float = 0.2
    # --- idle windows (label none) and sense-level cases
    idle_fraction: float = 0.2                         # idle windows added, as a share of the event windows
    room_dbfs: tuple[float, float] = (-60.0, -30.0)
    loud_noise_dbfs: tuple[float, float] = (-35.0, -12.0)
    drop_audio_prob: float = 0.1                       # AV only: audio missing (missing_audio_steps)
    drop_image_prob: float = 0.15                      # AV only: camera missing (missing_image_steps)
    # --- validation (calibration) mix
    val_noisy_prob: float = 0.5                        # share of val event windows with additive noise
    # --- compute: 0 = a fresh draw every epoch; K > 0 = K draws cycled over the epochs (epoch % K) and
    # kept in memory, so a CPU pays the augmentation once per draw instead of once per epoch
    draws: int = 0

    def __post_init__(self) -> None:
        for name in ('noise_prob', 'speed_prob', 'onset_prob', 'spec_prob', 'image_prob', 'invert_prob',
                     'drop_audio_prob', 'drop_image_prob', 'val_noisy_prob'):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f'augment.{name} must be in [0, 1], got {getattr(self, name)}')
        for name in ('snr_db', 'floor_dbfs', 'gain_db', 'onset_frac', 'scale', 'contrast', 'room_dbfs',
                     'loud_noise_dbfs'):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f'augment.{name} must be (low, high) with low <= high, got {(lo, hi)}')
        if self.floor_dbfs[1] >= 0 or self.room_dbfs[1] >= 0 or self.loud_noise_dbfs[1] >= 0:
            raise ValueError('dBFS levels must be below 0')
        if not (0 < self.onset_frac[0] and self.onset_frac[1] < 1):
            raise ValueError('augment.onset_frac must lie inside (0, 1)')
        if not self.noise_kinds or any(k not in ALL_NOISE_KINDS for k in self.noise_kinds):
            raise ValueError(f'augment.noise_kinds must be a non-empty subset of {ALL_NOISE_KINDS}')
        if self.draws < 0:
            raise ValueError(f'augment.draws must be >= 0, got {self.draws}')
        if self.idle_fraction < 0 or self.freq_masks < 0 or self.time_masks < 0 or self.freq_mask_max < 0:
            raise ValueError('idle_fraction and mask counts/sizes must be >= 0')
        if self.drop_audio_prob + self.drop_image_prob > 1:
            raise ValueError('drop_audio_prob + drop_image_prob must be <= 1 (never both senses missing)')

    @classmethod
    def from_dict(cls, data: dict | None) -> 'AugmentConfig':
        from av_snn_ros.config import from_dict
        return from_dict(cls, data or {})

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


# ------------------------------------------------------------------------------------------ audio

def dbfs_to_rms(dbfs: float) -> float:
    return float(10.0 ** (dbfs / 20.0))


def noise_floor(n: int, dbfs: float, sample_rate: int, rng: np.random.Generator,
                kinds: Sequence[str] = ('white', 'pink')) -> np.ndarray:
    """A microphone's self-noise: ``n`` samples of white or pink noise at RMS ``dbfs``."""
    kind = kinds[int(rng.integers(len(kinds)))]
    return noise(kind, n, sample_rate, rng) * np.float32(dbfs_to_rms(dbfs))


def speed_perturb(audio: np.ndarray, factor: float) -> np.ndarray:
    """Play ``audio`` ``factor`` times faster (pitch moves with it); ``factor`` from :data:`SPEED_RATIOS`."""
    if factor == 1.0:
        return audio
    if factor not in SPEED_RATIOS:
        raise ValueError(f'speed factor must be 1.0 or one of {sorted(SPEED_RATIOS)}, got {factor}')
    from scipy.signal import resample_poly
    up, down = SPEED_RATIOS[factor]
    return resample_poly(audio, up, down).astype(np.float32)


def place(utterance: np.ndarray, n: int, start: int | None, rng: np.random.Generator | None) -> tuple[np.ndarray, int]:
    """Put ``utterance`` into a window of ``n`` samples; returns ``(window, onset sample)``.

    ``start`` given: the event begins at that sample (cut at the window end). Otherwise a shorter
    utterance is placed at a random offset (centred when ``rng`` is None) and a longer one is cropped at
    a random (centred) position.
    """
    out = np.zeros(n, dtype=np.float32)
    length = len(utterance)
    if start is not None:
        count = min(length, n - start)
        out[start:start + count] = utterance[:count]
        return out, start
    if length <= n:
        offset = (n - length) // 2 if rng is None else int(rng.integers(0, n - length + 1))
        out[offset:offset + length] = utterance
        return out, offset
    crop = (length - n) // 2 if rng is None else int(rng.integers(0, length - n + 1))
    out[:] = utterance[crop:crop + n]
    return out, 0


def mix_noise(speech: np.ndarray, speech_power: float, snr_db: float | None, kind: str, floor_dbfs: float,
              sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Speech window + additive noise at ``snr_db`` (None: none) + the microphone floor; peak <= FULL_SCALE."""
    n = len(speech)
    mixed = speech.astype(np.float32).copy()
    if snr_db is not None and speech_power > 0:
        mixed += noise(kind, n, sample_rate, rng) * np.float32(np.sqrt(speech_power / 10.0 ** (snr_db / 10.0)))
    mixed += noise_floor(n, floor_dbfs, sample_rate, rng)
    peak = float(np.max(np.abs(mixed)))
    return mixed * np.float32(FULL_SCALE / peak) if peak > FULL_SCALE else mixed


def idle_audio(kind: str, n: int, sample_rate: int, aug: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of a window where nothing happens: ``silence`` (floor only), ``room`` (brown/pink room
    tone), ``noise`` (loud white/speech-shaped/pink noise)."""
    floor = noise_floor(n, float(rng.uniform(*aug.floor_dbfs)), sample_rate, rng)
    if kind == 'silence':
        return floor
    if kind == 'room':
        level, kinds = aug.room_dbfs, ('brown', 'pink')
    elif kind == 'noise':
        level, kinds = aug.loud_noise_dbfs, ('white', 'speech_shaped', 'pink')
    else:
        raise ValueError(f'unknown idle audio kind {kind!r}; use one of {IDLE_AUDIO_KINDS}')
    k = kinds[int(rng.integers(len(kinds)))]
    out = floor + noise(k, n, sample_rate, rng) * np.float32(dbfs_to_rms(float(rng.uniform(*level))))
    peak = float(np.max(np.abs(out)))
    return out * np.float32(FULL_SCALE / peak) if peak > FULL_SCALE else out


def spec_masks(audio: np.ndarray, aug: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """SpecAugment on a ``(T, 1, H, W)`` input: frequency and time stripes set to the window's mean."""
    t, _, h, w = audio.shape
    full = audio[:, 0].transpose(1, 0, 2).reshape(h, t * w).copy()    # (H, T*W): the window's spectrogram
    fill = float(full.mean())
    for _ in range(aug.freq_masks):
        width = int(rng.integers(0, aug.freq_mask_max + 1))
        start = int(rng.integers(0, max(1, h - width + 1)))
        full[start:start + width] = fill
    max_t = int(aug.time_mask_max_frac * t * w)
    for _ in range(aug.time_masks):
        width = int(rng.integers(0, max_t + 1))
        start = int(rng.integers(0, max(1, t * w - width + 1)))
        full[:, start:start + width] = fill
    return full.reshape(h, t, w).transpose(1, 0, 2)[:, None].astype(np.float32)


# ------------------------------------------------------------------------------------------ visual

def augment_image(image: np.ndarray, aug: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Shift, scale, contrast/brightness and (sometimes) inversion of a uint8 frame; uint8 out."""
    import cv2
    image = np.asarray(image)
    h, w = image.shape[:2]
    s = float(rng.uniform(*aug.scale))
    dx, dy = rng.uniform(-aug.shift_frac, aug.shift_frac, size=2) * (w, h)
    m = np.array([[s, 0.0, (1 - s) * w / 2 + dx], [0.0, s, (1 - s) * h / 2 + dy]], dtype=np.float32)
    out = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if out.ndim < image.ndim:
        out = out[..., None]
    out = out.astype(np.float32)
    mean = float(out.mean())
    out = (out - mean) * float(rng.uniform(*aug.contrast)) + mean + float(rng.uniform(-aug.brightness,
                                                                                        aug.brightness))
    if rng.random() < aug.invert_prob:
        out = PIXEL_MAX - out
    return np.clip(np.rint(out), 0, PIXEL_MAX).astype(np.uint8)


def idle_frame(kind: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A camera frame where nothing is shown: ``black``, ``grey``, ``white`` (flat, with a little sensor
    noise) or ``noise`` (uniform random pixels)."""
    if kind == 'noise':
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    level = {'black': rng.uniform(0, 30), 'grey': rng.uniform(80, 180), 'white': rng.uniform(220, 255)}.get(kind)
    if level is None:
        raise ValueError(f'unknown idle frame kind {kind!r}; use one of {IDLE_FRAME_KINDS}')
    sensor = rng.normal(0.0, rng.uniform(0.0, 6.0), size=shape)
    return np.clip(np.rint(level + sensor), 0, PIXEL_MAX).astype(np.uint8)


# ------------------------------------------------------------------------------------------ data set

class RobustDataset(torch.utils.data.Dataset):
    """An event source plus robustness augmentation and idle windows (module docstring).

    Args:
        base: the event source (``event(i)``, ``labels``, ``cfg``, its own ``__getitem__`` for ``clean``).
        classes: the base classes; :data:`NO_EVENT_LABEL` is appended as the background class.
        aug: the options; mode ``train`` | ``val`` | ``clean``; seed: the run's seed.
    """

    def __init__(self, base: Any, classes: Sequence[str], aug: AugmentConfig, mode: str, seed: int) -> None:
        if mode not in MODES:
            raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
        if NO_EVENT_LABEL in classes:
            raise ValueError(f'the base classes already contain {NO_EVENT_LABEL!r}')
        self.base, self.aug, self.mode, self.seed = base, aug, mode, int(seed)
        self.cfg: PreprocessConfig = base.cfg
        self.classes = [*map(str, classes), NO_EVENT_LABEL]
        self.no_event = len(self.classes) - 1
        self.epoch = 0
        self.n_events = len(base)
        self.n_idle = 0 if mode == 'clean' else max(1, int(round(aug.idle_fraction * self.n_events)))
        # val: events and idle windows in a seeded interleaved order, so any prefix (max_eval_batches) is a mix
        self._order = (np.random.default_rng([self.seed, _STREAM_VAL_ORDER]).permutation(len(self))
                       if mode == 'val' else None)
        first = base.event(0)
        self.has_audio, self.has_image = first.audio is not None, first.image is not None
        self._image_shape = None if first.image is None else first.image.shape
        self.speakers = getattr(base, 'speakers', None)
        self._draws: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, int]] = {}
        if mode == 'clean':   # same items in the same order: keep the source's sample metadata (replay parity)
            for attr in ('recordings', 'image_indices'):
                if hasattr(base, attr):
                    setattr(self, attr, getattr(base, attr))

    def __len__(self) -> int:
        return self.n_events + self.n_idle

    def set_epoch(self, epoch: int) -> None:
        """Redraw the training augmentation for epoch ``epoch`` (the val mix is epoch-independent)."""
        self.epoch = int(epoch)
        if hasattr(self.base, 'set_epoch'):
            self.base.set_epoch(0)   # the source stays clean: augmentation is drawn here

    @property
    def labels(self) -> list[int]:
        labels = list(self.base.labels) + [self.no_event] * self.n_idle
        return labels if self._order is None else [labels[j] for j in self._order]

    def _draw(self) -> int:
        """The augmentation draw of the current epoch (0 outside training)."""
        if self.mode != 'train':
            return 0
        return self.epoch % self.aug.draws if self.aug.draws else self.epoch

    def _rng(self, stream: int, i: int) -> np.random.Generator:
        epoch = self._draw()
        return np.random.default_rng([self.seed, stream, epoch, i])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f'index {i} out of range for {len(self)} samples')
        i %= len(self)
        if self.mode == 'clean':
            return self.base[i]
        if self._order is not None:
            i = int(self._order[i])
        if self.mode == 'train' and self.aug.draws:
            key = (self._draw(), i)
            if key not in self._draws:
                self._draws[key] = self._item(i)
            return self._draws[key]
        return self._item(i)

    def _item(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        if i >= self.n_events:
            audio, frames = self.idle_raw(i - self.n_events)
            return self._tensors(audio, frames, self.no_event, self._rng(_STREAM_IDLE, i), masks=False)
        rng = self._rng(_STREAM_EVENT, i)
        audio, frames, label = self.event_raw(i, rng)
        return self._tensors(audio, frames, label, rng, masks=self.mode == 'train')

    # -- raw windows
    def idle_raw(self, j: int) -> tuple[np.ndarray | None, list[np.ndarray] | None]:
        """Idle window ``j``: kinds cycle so every combination is represented in every epoch."""
        rng = self._rng(_STREAM_IDLE, self.n_events + j)
        cfg = self.cfg
        audio = (idle_audio(IDLE_AUDIO_KINDS[j % len(IDLE_AUDIO_KINDS)], cfg.window_samples, cfg.sample_rate,
                            self.aug, rng) if self.has_audio else None)
        frames = None
        if self.has_image:
            kind = IDLE_FRAME_KINDS[(j // len(IDLE_AUDIO_KINDS)) % len(IDLE_FRAME_KINDS)]
            frame = idle_frame(kind, self._image_shape, rng)
            frames = [frame] * cfg.timesteps
        return audio, frames

    def event_raw(self, i: int, rng: np.random.Generator) -> tuple[np.ndarray | None, list[np.ndarray] | None, int]:
        """Event window ``i`` as sensed: augmented (train) or clean/noisy (val) audio and frames."""
        aug, cfg, train = self.aug, self.cfg, self.mode == 'train'
        event = self.base.event(i)
        n = cfg.window_samples
        onset_s = 0.0
        audio = None
        if event.audio is not None:
            utterance = event.audio
            if train and rng.random() < aug.speed_prob:
                utterance = speed_perturb(utterance, float(rng.choice(sorted(SPEED_RATIOS))))
            if train:
                utterance = utterance * np.float32(10.0 ** (rng.uniform(*aug.gain_db) / 20.0))
            start = int(rng.uniform(*aug.onset_frac) * n) if train and rng.random() < aug.onset_prob else None
            speech, onset = place(utterance, n, start, rng if train else None)
            onset_s = onset / cfg.sample_rate if start is not None else 0.0
            voiced = speech[onset:onset + len(utterance)] if len(utterance) < n - onset else speech[onset:]
            power = signal_power(voiced) if voiced.size else 0.0
            noisy = rng.random() < (aug.noise_prob if train else aug.val_noisy_prob)
            snr = float(rng.uniform(*aug.snr_db)) if noisy else None
            kind = aug.noise_kinds[int(rng.integers(len(aug.noise_kinds)))]
            audio = mix_noise(speech, power, snr, kind, float(rng.uniform(*aug.floor_dbfs)), cfg.sample_rate, rng)
        frames = None
        if event.image is not None:
            image = augment_image(event.image, aug, rng) if train and rng.random() < aug.image_prob else event.image
            blank = idle_frame(IDLE_FRAME_KINDS[int(rng.integers(len(IDLE_FRAME_KINDS)))], image.shape, rng)
            # before the audio onset the camera shows nothing yet: the network must integrate over T
            frames = [image if c >= onset_s else blank for c in cfg.step_centers_s()]
        return audio, frames, int(event.label)

    def _tensors(self, audio: np.ndarray | None, frames: list[np.ndarray] | None, label: int,
                 rng: np.random.Generator, masks: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
        a, v = preprocess_window(audio, frames, self.cfg)
        if self.has_audio and self.has_image and self.mode == 'train':
            u = rng.random()
            if u < self.aug.drop_audio_prob:
                a = missing_audio_steps(self.cfg)
            elif u < self.aug.drop_audio_prob + self.aug.drop_image_prob:
                v = missing_image_steps(self.cfg)
        if masks and audio is not None and rng.random() < self.aug.spec_prob:
            a = spec_masks(a, self.aug, rng)
        return torch.from_numpy(a), torch.from_numpy(v), label
