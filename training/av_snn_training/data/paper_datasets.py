"""Shared machinery for the papers' data sets (CREMA-D, AVE, UrbanSound8K-AV, CIFAR10-AV).

Every loader yields the project's one contract through the shared preprocessing:
``(audio (T,1,Ha,Wa), visual (T,C,Hv,Wv), label)`` from ``av_snn_ros.preprocessing.preprocess_window``,
and ``raw(i)`` gives the signals before preprocessing (a window of mono float32 audio at
``cfg.sample_rate`` plus ``cfg.timesteps`` uint8 RGB frames), so a rosbag made from it replays exactly what
the model was trained on.

Video data sets (CREMA-D, AVE) feed one key frame per timestep (MISNet: 10 candidate frames per clip, 4
picked at random in training, evenly spaced at test). Audio-image data sets (UrbanSound8K-AV, CIFAR10-AV)
repeat one image over all timesteps, as in SMMT/MISNet. Random choices are deterministic in
``(seed, epoch, index)``; call ``set_epoch`` each epoch to draw new frames.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from av_snn_ros.preprocessing import PreprocessConfig, fit_length, preprocess_window, resample

from .wav import read_wav

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp')
FRAME_SAMPLING = ('uniform', 'random')
_STREAM_FRAMES, _STREAM_PAIRING, _STREAM_ORDER = 11, 12, 13

# Paper input sizes (MISNet Sec. 4: 128x128 for CREMA-D/AVE, 96x96 for UrbanSound8K-AV, 32x32 for
# CIFAR10-AV; T = 4). Window lengths cover the clips: CREMA-D utterances are ~2-3 s (the reference code tiles
# them to 3 s), AVE events up to 10 s, UrbanSound8K slices up to 4 s. Log-mel at 16 kHz, one mel bin per row.
PAPER_CONFIGS: dict[str, PreprocessConfig] = {
    'crema_d': PreprocessConfig(window_s=3.0, n_mels=128, audio_size=(128, 128), image_size=(128, 128),
                                image_channels=3),
    'ave': PreprocessConfig(window_s=10.0, hop_length=250, n_mels=128, audio_size=(128, 128),
                            image_size=(128, 128), image_channels=3),
    'urbansound8k_av': PreprocessConfig(window_s=4.0, n_mels=96, audio_size=(96, 96), image_size=(96, 96),
                                        image_channels=3),
    'cifar10_av': PreprocessConfig(window_s=1.0, n_mels=32, audio_size=(32, 32), image_size=(32, 32),
                                   image_channels=3),
}


def paper_config(name: str) -> PreprocessConfig:
    """The preprocessing configuration used for data set ``name`` (see ``PAPER_CONFIGS``)."""
    if name not in PAPER_CONFIGS:
        raise ValueError(f'unknown data set {name!r}; use one of {sorted(PAPER_CONFIGS)}')
    return PAPER_CONFIGS[name]


@dataclass(frozen=True)
class ClipSample:
    """One sample before preprocessing."""

    audio: np.ndarray                 # float32 mono at cfg.sample_rate, exactly cfg.window_samples long
    frames: tuple[np.ndarray, ...]    # cfg.timesteps uint8 RGB frames (HxWx3), one per timestep
    label: int
    clip: str                         # clip / file identifier


def stable_key(name: str) -> int:
    """A 32-bit key of a name that is the same on every run and platform (unlike ``hash``)."""
    return zlib.crc32(name.encode())


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB HxWx3; ``ValueError`` naming the file when it cannot be decoded."""
    import cv2
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'image file not found: {path}')
    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise ValueError(f'{path}: not a decodable image')
    return np.ascontiguousarray(img[:, :, ::-1])   # OpenCV decodes BGR


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name (frame order for extracted frames)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def audio_window(audio: np.ndarray, rate: int, cfg: PreprocessConfig) -> np.ndarray:
    """Resample to ``cfg.sample_rate`` and centre in (or crop centred to) one window."""
    return fit_length(resample(audio, rate, cfg.sample_rate), cfg.window_samples)


def load_audio_window(path: Path, cfg: PreprocessConfig, start_s: float | None = None,
                      end_s: float | None = None) -> np.ndarray:
    """Read a WAV, keep ``[start_s, end_s)`` if given, and fit it into one centred window."""
    audio, rate = read_wav(path)
    if start_s is not None or end_s is not None:
        lo = int(round((start_s or 0.0) * rate))
        hi = len(audio) if end_s is None else int(round(end_s * rate))
        if lo >= min(hi, len(audio)):
            raise ValueError(f'{path}: segment [{start_s}, {end_s}) s lies outside the '
                             f'{len(audio) / rate:.2f} s recording')
        audio = audio[lo:hi]
    return audio_window(audio, rate, cfg)


def pick_indices(n: int, count: int, mode: str, rng: np.random.Generator | None) -> list[int]:
    """``count`` sorted indices into ``n`` candidates: evenly spaced centres, or random (sorted).

    With fewer candidates than ``count`` the uniform mode repeats neighbours and the random mode draws
    with replacement.
    """
    if n < 1:
        raise ValueError('no candidates to pick from')
    if mode == 'uniform':
        return [min(n - 1, int((t + 0.5) * n / count)) for t in range(count)]
    if mode == 'random':
        if rng is None:
            raise ValueError('random picking needs a generator')
        return sorted(int(i) for i in rng.choice(n, size=count, replace=n < count))
    raise ValueError(f'unknown frame sampling {mode!r}; use one of {FRAME_SAMPLING}')


def seeded_split(keys: Sequence[str], test_fraction: float, seed: int) -> set[str]:
    """The test share of ``keys``: the ``test_fraction`` with the lowest seeded stable hash.

    Adding or removing other keys never moves a key between train and test.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f'test_fraction must be in (0, 1), got {test_fraction}')
    seed_key = stable_key(f'split-{seed}')
    ranked = sorted(set(keys), key=lambda k: (zlib.crc32(k.encode(), seed_key), k))
    return set(ranked[:int(round(len(ranked) * test_fraction))])


def pair_by_class(labels: Sequence[int], pools: dict[int, np.ndarray], seed: int) -> np.ndarray:
    """For each item, an element of its class's pool: a seeded permutation per class, used in order."""
    out = np.empty(len(labels), dtype=np.int64)
    rank: dict[int, int] = {}
    perms: dict[int, np.ndarray] = {}
    for k, label in enumerate(labels):
        if label not in perms:
            pool = pools.get(label)
            if pool is None or len(pool) == 0:
                raise ValueError(f'no images of class {label} to pair with')
            perms[label] = np.random.default_rng([seed, _STREAM_PAIRING, label]).permutation(pool)
        r = rank.get(label, 0)
        out[k] = perms[label][r % len(perms[label])]
        rank[label] = r + 1
    return out


def check_split(split: str, allowed: Sequence[str]) -> None:
    if split not in allowed:
        raise ValueError(f'unknown split {split!r}; use one of {tuple(allowed)}')


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f'{what} not found: {path}')
    return path


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f'{what} not found: {path}')
    return path


class ClipDataset(torch.utils.data.Dataset):
    """Base class: subclasses fill ``self.items`` (list), ``self.classes`` and implement ``_raw``."""

    classes: tuple[str, ...] = ()

    def __init__(self, cfg: PreprocessConfig, seed: int, frame_sampling: str) -> None:
        if frame_sampling not in FRAME_SAMPLING:
            raise ValueError(f'unknown frame_sampling {frame_sampling!r}; use one of {FRAME_SAMPLING}')
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f'seed must be a non-negative integer, got {seed!r}')
        self.cfg, self.seed, self.frame_sampling = cfg, int(seed), frame_sampling
        self.epoch = 0
        self.items: list = []

    def _finalize(self, items: list, num: int | None) -> None:
        """Seeded order of ``items``, cut to the first ``num`` (a smaller ``num`` is a prefix of a larger)."""
        if not items:
            raise ValueError(f'{type(self).__name__}: the selected split is empty')
        order = np.random.default_rng([self.seed, _STREAM_ORDER]).permutation(len(items))
        if num is not None:
            if not isinstance(num, (int, np.integer)) or num < 1:
                raise ValueError(f'num must be a positive integer, got {num!r}')
            if num > len(items):
                raise ValueError(f'num={num} exceeds the {len(items)} samples of the split')
            order = order[:num]
        self.items = [items[j] for j in order]

    def set_epoch(self, epoch: int) -> None:
        """Select the random frames of another epoch (no effect with uniform sampling)."""
        self.epoch = int(epoch)

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _STREAM_FRAMES, self.epoch, i])

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> list[int]:
        return [self._label(i) for i in range(len(self.items))]

    def _label(self, i: int) -> int:
        return self.items[i].label

    def _index(self, i: int) -> int:
        n = len(self.items)
        if not -n <= i < n:
            raise IndexError(f'index {i} out of range for {n} samples')
        return i % n

    def raw(self, i: int) -> ClipSample:
        """Raw audio window and the ``cfg.timesteps`` frames of sample ``i``."""
        return self._raw(self._index(i))

    def _raw(self, i: int) -> ClipSample:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        raw = self.raw(i)
        audio, visual = preprocess_window(raw.audio, list(raw.frames), self.cfg)
        return torch.from_numpy(audio), torch.from_numpy(visual), raw.label
