"""RAVDESS emotional speech (audio only), split by actor: the emotion model's data set.

Layout of ``data_root`` (see ../shared/data/README.md)::

    ravdess/Actor_NN/03-01-EE-II-SS-RR-AA.wav     mono WAV (any rate; the shared copy is 16 kHz)

The label is the file name's emotion field ``EE`` (01-08), mapped to REP-155 (ROS4HRI) expression names
where they exist (:data:`LABELS`; ``calm`` is RAVDESS-only, REP-155 names ``fearful`` ``scared``).

Split **by actor** (fixed, documented in docs/data.md; every window of a clip stays in the clip's split):

- ``test``: actors :data:`TEST_ACTORS` (19 male, 20 female), never used for training or model selection;
- ``val``: actors :data:`VAL_ACTORS` (17 male, 18 female): best epoch, calibration, acceptance threshold;
- ``train``: every other actor present (01-16 in the shared copy).

``actors`` overrides the split's actors (``av-snn eval --speakers 19 20``). A clip gives one window:
``event(i)`` is the whole clip (the robustness wrapper crops/places it), ``raw(i)``/``__getitem__`` the
centred window (a longer clip is cropped centred; a shorter one is padded with a seeded microphone floor
at :data:`PAD_FLOOR_DBFS`, never with digital zeros).
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

from .augment import Event, noise_floor
from .wav import read_wav

# File-name emotion code (01-08) -> label index; names follow REP-155 where it has the expression.
LABELS = ('neutral', 'calm', 'happy', 'sad', 'angry', 'fearful', 'disgusted', 'surprised')
RAVDESS_NAMES = ('neutral', 'calm', 'happy', 'sad', 'angry', 'fearful', 'disgust', 'surprised')
#: label -> hri_msgs/Expression constant (REP-155); calm has none
REP155_EXPRESSIONS = {'neutral': 'neutral', 'happy': 'happy', 'sad': 'sad', 'angry': 'angry',
                      'fearful': 'scared', 'disgusted': 'disgusted', 'surprised': 'surprised'}
#: the 4-class subset reported beside the 8-class accuracy
FOUR_CLASS = ('neutral', 'happy', 'sad', 'angry')
TEST_ACTORS = ('19', '20')
VAL_ACTORS = ('17', '18')
SPLITS = ('train', 'val', 'test')
PAD_FLOOR_DBFS = -70.0
RAVDESS_DIR = 'ravdess'
_FILE_RE = re.compile(r'^03-01-(?P<emotion>0[1-8])-(?P<intensity>0[12])-(?P<statement>0[12])-'
                      r'(?P<repetition>0[12])-(?P<actor>\d\d)\.wav$')
_STREAM_ORDER, _STREAM_PAD = 1, 21


@dataclass(frozen=True)
class Clip:
    """One RAVDESS file, parsed from its name."""

    path: Path
    label: int
    actor: str
    intensity: int


def scan_clips(data_root: str | Path) -> list[Clip]:
    """Every clip under ``data_root/ravdess/Actor_NN/``, sorted by (actor, file name).

    Raises ``FileNotFoundError`` when the folder is missing and ``ValueError`` for a ``.wav`` whose name
    is not a RAVDESS speech name, a file in the wrong actor folder, or no clips at all.
    """
    folder = Path(data_root) / RAVDESS_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f'RAVDESS folder not found: {folder} '
                                f'(expected {folder}/Actor_NN/03-01-EE-II-SS-RR-AA.wav)')
    clips = []
    for path in sorted(folder.glob('Actor_*/*.wav')):
        m = _FILE_RE.match(path.name)
        if m is None:
            raise ValueError(f'{path}: not a RAVDESS speech file name (03-01-EE-II-SS-RR-AA.wav)')
        if path.parent.name != f'Actor_{m["actor"]}':
            raise ValueError(f'{path}: actor {m["actor"]} in the name but folder {path.parent.name}')
        clips.append(Clip(path, int(m['emotion']) - 1, m['actor'], int(m['intensity'])))
    if not clips:
        raise ValueError(f'no RAVDESS clips under {folder}/Actor_*/')
    return sorted(clips, key=lambda c: (c.actor, c.path.name))


def normalise_actor(actor: str | int) -> str:
    """``19``, ``'19'``, ``'Actor_19'`` -> ``'19'``."""
    text = str(actor).removeprefix('Actor_')
    if not text.isdigit() or not 1 <= int(text) <= 99:
        raise ValueError(f'actor must be a number 01-99, got {actor!r}')
    return f'{int(text):02d}'


@functools.lru_cache(maxsize=None)
def _read_cached(path: str, mtime_ns: int, rate: int) -> np.ndarray:
    audio, native = read_wav(path)
    audio = resample(audio, native, rate)
    audio.setflags(write=False)
    return audio


class Ravdess(torch.utils.data.Dataset):
    """RAVDESS speech clips as audio-only windows through the shared preprocessing.

    Args:
        data_root: folder holding ``ravdess/Actor_NN/``.
        split: ``train``, ``val`` or ``test`` (module docstring).
        cfg: shared preprocessing (sample rate, window length).
        seed: order and padding floor are deterministic functions of it.
        actors: these actors instead of the split's (any found under the folder), e.g. ``['19', '20']``.
        num: keep the first ``num`` clips of the seeded order.
    """

    classes = LABELS

    def __init__(self, data_root: str | Path, split: str = 'train', cfg: PreprocessConfig = PreprocessConfig(),
                 seed: int = 0, actors: Sequence[str | int] | None = None, num: int | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f'unknown split {split!r}; use one of {SPLITS}')
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f'seed must be a non-negative integer, got {seed!r}')
        self.data_root, self.split, self.cfg, self.seed = Path(data_root), split, cfg, int(seed)
        clips = scan_clips(self.data_root)
        found = sorted({c.actor for c in clips})
        if actors is not None:
            if isinstance(actors, (str, int)):
                raise TypeError('actors must be a sequence of actor numbers, not a single value')
            wanted = sorted({normalise_actor(a) for a in actors})
            unknown = sorted(set(wanted) - set(found))
            if unknown or not wanted:
                raise ValueError(f'actors {unknown or wanted} not found; {self.data_root / RAVDESS_DIR} has {found}')
        elif split == 'test':
            wanted = [a for a in found if a in TEST_ACTORS]
        elif split == 'val':
            wanted = [a for a in found if a in VAL_ACTORS]
        else:
            wanted = [a for a in found if a not in TEST_ACTORS + VAL_ACTORS]
        if not wanted:
            raise ValueError(f'no {split} actors in {self.data_root / RAVDESS_DIR} (found {found}); pass actors=[...]')
        self.speakers = tuple(wanted)
        chosen = [c for c in clips if c.actor in wanted]
        order = np.random.default_rng([self.seed, _STREAM_ORDER]).permutation(len(chosen))
        if num is not None:
            if not isinstance(num, (int, np.integer)) or not 1 <= num <= len(chosen):
                raise ValueError(f'num must be in [1, {len(chosen)}], got {num!r}')
            order = order[:num]
        self.clips: tuple[Clip, ...] = tuple(chosen[j] for j in order)
        self.recordings = self.clips   # the name sample_records and the replay tools look for

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def labels(self) -> list[int]:
        return [c.label for c in self.clips]

    def _index(self, i: int) -> int:
        n = len(self.clips)
        if not -n <= i < n:
            raise IndexError(f'index {i} out of range for {n} samples')
        return i % n

    def clip_audio(self, i: int) -> np.ndarray:
        """The whole clip ``i`` at ``cfg.sample_rate`` (read once, read-only)."""
        clip = self.clips[self._index(i)]
        return _read_cached(str(clip.path), clip.path.stat().st_mtime_ns, self.cfg.sample_rate)

    def event(self, i: int) -> Event:
        """The clean clip for the robustness wrapper (no camera modality)."""
        i = self._index(i)
        return Event(audio=self.clip_audio(i), image=None, label=self.clips[i].label)

    def raw(self, i: int) -> np.ndarray:
        """The centred window of clip ``i`` (padding: a seeded floor at PAD_FLOOR_DBFS, never zeros)."""
        i = self._index(i)
        clip, n = self.clip_audio(i), self.cfg.window_samples
        window = fit_length(clip, n)
        if len(clip) < n:
            rng = np.random.default_rng([self.seed, _STREAM_PAD, zlib.crc32(self.clips[i].path.name.encode())])
            window = window + noise_floor(n, PAD_FLOOR_DBFS, self.cfg.sample_rate, rng)
        return window.astype(np.float32)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(audio (T,1,Ha,Wa), visual = missing_image_steps, label)``: the model has no camera input."""
        audio, visual = preprocess_window(self.raw(i), None, self.cfg)   # visual: missing_image_steps
        return torch.from_numpy(audio), torch.from_numpy(visual), self.clips[self._index(i)].label
