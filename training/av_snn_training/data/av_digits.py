"""AV digits: spoken digits (FSDD) paired with handwritten digits (MNIST), split by speaker.

Layout of ``data_root`` (any folder with this layout works, including unseen speaker names)::

    fsdd/recordings/{digit}_{speaker}_{index}.wav    mono WAV, any rate (FSDD: 8 kHz S16)
    mnist/mnist.npz                                   x_train, y_train, x_test, y_test (uint8)

Splits (see docs/data.md):

- ``test``: every recording of the held-out speakers (default ``DEFAULT_TEST_SPEAKERS``), paired with
  MNIST ``x_test`` images;
- ``val``: ``VAL_FRACTION`` of each (speaker, digit) group of the training speakers, chosen by a stable
  hash of the file name (independent of ``seed``, so train and val never overlap whatever seeds are used),
  paired with ``x_train`` images from a pool disjoint from train's;
- ``train``: the remaining recordings of the training speakers, paired with ``x_train`` images.

Pairing: recording ``k`` of digit ``d`` (in sorted file order) gets image ``perm_d[k]`` of a permutation of
that digit's MNIST images seeded by ``seed``. Order: a seeded shuffle; ``num`` keeps its first N, so a
smaller ``num`` is a prefix of a larger one and sample ``i`` is the same whatever ``num`` is.
"""
from __future__ import annotations

import functools
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from av_snn_ros.preprocessing import PreprocessConfig, fit_length, preprocess_window, resample

from .corruptions import AudioCorruption, ImageCorruption, corrupt_audio, corrupt_image, signal_power
from .wav import read_wav

SPEAKERS = ('george', 'jackson', 'nicolas', 'theo', 'yweweler')
# One held-out voice keeps four for training (three generalise much worse); see docs/data.md.
DEFAULT_TEST_SPEAKERS = ('theo',)
LABELS = tuple(str(d) for d in range(10))
NUM_CLASSES = len(LABELS)
SPLITS = ('train', 'val', 'test')
VAL_FRACTION = 0.1

FSDD_DIR = Path('fsdd') / 'recordings'
MNIST_FILE = Path('mnist') / 'mnist.npz'
_FILE_RE = re.compile(r'^(?P<digit>\d)_(?P<speaker>.+)_(?P<index>\d+)\.wav$')

# Independent random streams derived from the user's seed (numpy SeedSequence takes a list of ints).
_STREAM_ORDER, _STREAM_PAIRING, _STREAM_AUDIO, _STREAM_IMAGE, _STREAM_POOLS = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class NoisyProtocol:
    """Parameters of one corruption protocol (both modalities, corrupted independently)."""

    audio: AudioCorruption
    image: ImageCorruption


# Calibrated so that neither modality alone is easy while the pair stays informative: speaker-held-out
# proxy CNN accuracies audio 55 %, image 79 %, late fusion 90 % (clean: 84 %, 99 %, 99.8 %); docs/data.md.
PROTOCOLS: dict[str, NoisyProtocol | None] = {
    'clean': None,
    'noisy': NoisyProtocol(audio=AudioCorruption(snr_db=0.0),
                           image=ImageCorruption(noise_std=60.0, patches=2, patch_frac=(0.3, 0.5))),
}


@dataclass(frozen=True)
class Recording:
    """One FSDD file, parsed from its name."""

    path: Path
    digit: int
    speaker: str
    index: int


@dataclass(frozen=True)
class RawSample:
    """What a robot would sense for one utterance, before preprocessing."""

    audio: np.ndarray       # float32 mono at cfg.sample_rate, exactly cfg.window_samples long, utterance centred
    image: np.ndarray       # uint8 HxW (28x28 MNIST): what the camera shows during the window
    label: int
    speaker: str
    audio_file: str         # file name
    image_index: int        # index into MNIST x_train (train/val) or x_test (test)


def scan_recordings(data_root: str | Path) -> list[Recording]:
    """All recordings under ``data_root/fsdd/recordings``, sorted by (speaker, digit, index).

    Raises ``FileNotFoundError`` when the folder is missing and ``ValueError`` for a ``.wav`` whose name
    does not follow ``{digit}_{speaker}_{index}.wav`` or an empty folder.
    """
    folder = Path(data_root) / FSDD_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f'FSDD recordings folder not found: {folder} '
                                '(expected {data_root}/fsdd/recordings/{digit}_{speaker}_{index}.wav)')
    recordings = []
    for path in folder.iterdir():
        if path.suffix.lower() != '.wav':
            continue
        m = _FILE_RE.match(path.name)
        if m is None:
            raise ValueError(f'{path}: file name does not match {{digit}}_{{speaker}}_{{index}}.wav')
        recordings.append(Recording(path, int(m['digit']), m['speaker'], int(m['index'])))
    if not recordings:
        raise ValueError(f'no .wav recordings in {folder}')
    return sorted(recordings, key=lambda r: (r.speaker, r.digit, r.index))


@functools.lru_cache(maxsize=2)
def _load_mnist_cached(path: str, mtime_ns: int) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ('x_train', 'y_train', 'x_test', 'y_test')}
    except KeyError as exc:
        raise ValueError(f'{path}: missing array {exc} (need x_train, y_train, x_test, y_test)') from exc
    except (OSError, ValueError) as exc:
        raise ValueError(f'{path}: not a readable .npz file ({exc})') from exc
    for part in ('train', 'test'):
        x, y = arrays[f'x_{part}'], arrays[f'y_{part}']
        if x.dtype != np.uint8 or x.ndim != 3 or y.shape != (x.shape[0],):
            raise ValueError(f'{path}: x_{part} must be uint8 (N, H, W) with y_{part} (N,), '
                             f'got {x.dtype} {x.shape} and {y.shape}')
        missing = sorted(set(range(NUM_CLASSES)) - set(np.unique(y).tolist()))
        if missing:
            raise ValueError(f'{path}: y_{part} has no images of digit(s) {missing}')
    for a in arrays.values():
        a.setflags(write=False)   # shared between datasets: nobody may modify it in place
    return arrays


def load_mnist(data_root: str | Path) -> dict[str, np.ndarray]:
    """``x_train, y_train, x_test, y_test`` from ``data_root/mnist/mnist.npz`` (loaded once, read-only)."""
    path = Path(data_root) / MNIST_FILE
    if not path.is_file():
        raise FileNotFoundError(f'MNIST file not found: {path} (expected an .npz with x_train, y_train, '
                                'x_test, y_test)')
    return _load_mnist_cached(str(path.resolve()), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=None)
def _read_cached(path: str, mtime_ns: int) -> tuple[np.ndarray, int]:
    """Decoded native-rate audio, shared by every dataset instance (2,500 FSDD files are ~40 MB)."""
    audio, rate = read_wav(path)
    audio.setflags(write=False)
    return audio, rate


def val_files(recordings: Sequence[Recording]) -> set[str]:
    """Stable, seed-independent val membership: per (speaker, digit) group, the ``VAL_FRACTION`` of its
    files with the lowest CRC-32 of the file name (adding or removing other files never moves a file)."""
    groups: dict[tuple[str, int], list[Recording]] = {}
    for r in recordings:
        groups.setdefault((r.speaker, r.digit), []).append(r)
    chosen: set[str] = set()
    for group in groups.values():
        ranked = sorted(group, key=lambda r: (_file_key(r.path.name), r.path.name))
        chosen.update(r.path.name for r in ranked[:int(round(len(group) * VAL_FRACTION))])
    return chosen


def _file_key(name: str) -> int:
    return zlib.crc32(name.encode())


class AVDigits(torch.utils.data.Dataset):
    """Spoken digit + handwritten digit of the same class, preprocessed by the shared runtime path.

    Args:
        data_root: folder with ``fsdd/recordings`` and ``mnist/mnist.npz``.
        split: ``train``, ``val`` or ``test`` (see module docstring).
        cfg: the shared preprocessing configuration (also sets sample rate and window length of ``raw``).
        protocol: ``clean`` or ``noisy`` (corruptions of the raw signals, see ``PROTOCOLS``).
        seed: pairing, order and corruptions are deterministic functions of the seed.
        speakers: use these speakers instead of the split's default ones (any names found in the folder).
        num: keep only the first ``num`` samples of the seeded order.
    """

    def __init__(self, data_root: str | Path, split: str = 'train', cfg: PreprocessConfig = PreprocessConfig(),
                 protocol: str = 'clean', seed: int = 0, speakers: Sequence[str] | None = None,
                 num: int | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f'unknown split {split!r}; use one of {SPLITS}')
        if protocol not in PROTOCOLS:
            raise ValueError(f'unknown protocol {protocol!r}; use one of {tuple(PROTOCOLS)}')
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f'seed must be a non-negative integer, got {seed!r}')
        self.data_root = Path(data_root)
        self.split, self.cfg, self.protocol, self.seed = split, cfg, protocol, int(seed)
        self.corruption = PROTOCOLS[protocol]
        self.epoch = 0

        recordings = scan_recordings(self.data_root)
        found = sorted({r.speaker for r in recordings})
        self.speakers = self._choose_speakers(split, speakers, found)
        chosen = [r for r in recordings if r.speaker in self.speakers]
        if split != 'test':
            val = val_files(chosen)
            chosen = [r for r in chosen if (r.path.name in val) == (split == 'val')]
        if not chosen:
            raise ValueError(f'split {split!r} of speakers {list(self.speakers)} has no recordings in '
                             f'{self.data_root / FSDD_DIR}')

        mnist = load_mnist(self.data_root)
        self.image_source = 'x_test' if split == 'test' else 'x_train'
        self._images = mnist[self.image_source]
        pairs = self._pair(chosen, mnist[self.image_source.replace('x_', 'y_')])

        order = np.random.default_rng([self.seed, _STREAM_ORDER]).permutation(len(chosen))
        if num is not None:
            if not isinstance(num, (int, np.integer)) or num < 1:
                raise ValueError(f'num must be a positive integer, got {num!r}')
            if num > len(chosen):
                raise ValueError(f'num={num} exceeds the {len(chosen)} recordings of split {split!r}')
            order = order[:num]
        self.recordings: tuple[Recording, ...] = tuple(chosen[j] for j in order)
        self.image_indices: tuple[int, ...] = tuple(int(pairs[j]) for j in order)
        # Decode every WAV now (not lazily): DataLoader workers then share it instead of re-reading per epoch.
        self._audio = [_read_cached(str(r.path), r.path.stat().st_mtime_ns) for r in self.recordings]

    @staticmethod
    def _choose_speakers(split: str, speakers: Sequence[str] | None, found: list[str]) -> tuple[str, ...]:
        if speakers is not None:
            if isinstance(speakers, str):
                raise TypeError('speakers must be a sequence of names, not a single string')
            unknown = sorted(set(speakers) - set(found))
            if unknown or not speakers:
                raise ValueError(f'speakers {unknown or list(speakers)} not found; the folder has {found}')
            return tuple(sorted(set(speakers)))
        test = [s for s in found if s in DEFAULT_TEST_SPEAKERS]
        chosen = test if split == 'test' else [s for s in found if s not in DEFAULT_TEST_SPEAKERS]
        if not chosen:
            raise ValueError(f'no {split} speakers: the folder has {found} and the default test speakers are '
                             f'{list(DEFAULT_TEST_SPEAKERS)}; pass speakers=[...] explicitly')
        return tuple(chosen)

    def _pair(self, chosen: list[Recording], labels: np.ndarray) -> np.ndarray:
        """Image index for each recording: a seeded permutation of the same digit's images per digit.

        Train and val draw from two fixed halves of each digit's ``x_train`` images (split independently
        of ``seed``), so they never share an image, even when train is re-paired with other seeds; the
        test split uses all of ``x_test``.
        """
        pairs = np.empty(len(chosen), dtype=np.int64)
        for digit in range(NUM_CLASSES):
            members = [k for k, r in enumerate(chosen) if r.digit == digit]
            if not members:
                continue
            pool = np.flatnonzero(labels == digit)
            if self.split != 'test':
                halves = np.random.default_rng([_STREAM_POOLS, digit]).permutation(pool)
                pool = np.sort(halves[:len(halves) // 2] if self.split == 'train' else halves[len(halves) // 2:])
            perm = np.random.default_rng([self.seed, _STREAM_PAIRING, digit]).permutation(pool)
            for rank, k in enumerate(members):
                pairs[k] = perm[rank % len(perm)]   # wraps only for folders with more files than images
        return pairs

    def __len__(self) -> int:
        return len(self.recordings)

    def set_epoch(self, epoch: int) -> None:
        """Redraw the ``noisy`` corruptions for training epoch ``epoch`` (noise augmentation).

        Epoch 0 (the default) is the documented, fixed protocol used for evaluation and bags; other epochs
        draw other noise, deterministically in ``(seed, epoch, file)``. No effect under ``clean``.
        """
        if not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f'epoch must be a non-negative integer, got {epoch!r}')
        self.epoch = int(epoch)

    @property
    def labels(self) -> list[int]:
        """Class of every sample, in dataset order (for stratified samplers and metrics)."""
        return [r.digit for r in self.recordings]

    def _index(self, i: int) -> int:
        n = len(self.recordings)
        if not -n <= i < n:
            raise IndexError(f'index {i} out of range for {n} samples')
        return i % n

    def utterance(self, i: int) -> np.ndarray:
        """The whole recording of sample ``i`` at ``cfg.sample_rate`` (no window, no corruption)."""
        native, rate = self._audio[self._index(i)]
        return resample(native, rate, self.cfg.sample_rate)

    def event(self, i: int) -> 'Event':
        """The clean utterance and its MNIST image, for the robustness wrapper (data/augment.py)."""
        from .augment import Event
        i = self._index(i)
        return Event(audio=self.utterance(i), image=self._images[self.image_indices[i]], label=self.recordings[i].digit)

    def raw(self, i: int) -> RawSample:
        """The raw audio window and camera image of sample ``i`` (protocol corruptions applied)."""
        i = self._index(i)
        rec, image_index = self.recordings[i], self.image_indices[i]
        native, rate = self._audio[i]
        utterance = resample(native, rate, self.cfg.sample_rate)
        n = self.cfg.window_samples
        audio = fit_length(utterance, n)                      # centred; long recordings cropped centred
        image = self._images[image_index]
        if self.corruption is not None:
            # keyed by file, so a sample's corruption survives num/reorder; epoch 0 keeps the plain key
            key = [_file_key(rec.path.name)] + ([self.epoch] if self.epoch else [])
            start = max(0, (len(utterance) - n) // 2)
            power = signal_power(utterance[start:start + n])   # the part of the utterance inside the window
            audio, _ = corrupt_audio(audio, power, self.corruption.audio, self.cfg.sample_rate,
                                     np.random.default_rng([self.seed, _STREAM_AUDIO, *key]))
            image = corrupt_image(image, self.corruption.image,
                                  np.random.default_rng([self.seed, _STREAM_IMAGE, *key]))
        else:
            image = image.copy()
        return RawSample(audio=audio, image=image, label=rec.digit, speaker=rec.speaker,
                         audio_file=rec.path.name, image_index=image_index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(audio (T,1,Ha,Wa), visual (T,C,Hv,Wv), label)``: a static camera shows the image all window."""
        raw = self.raw(i)
        audio, visual = preprocess_window(raw.audio, [raw.image] * self.cfg.timesteps, self.cfg)
        return torch.from_numpy(audio), torch.from_numpy(visual), raw.label
