"""CREMA-D (6 emotions) in the published audio layout plus per-clip extracted frames (OGM-GE/PMR style).

Layout of ``root``::

    AudioWAV/{ActorID}_{Sentence}_{Emotion}_{Level}.wav      e.g. 1001_DFA_ANG_XX.wav (published data set)
    Image-01-FPS/{clip}/*.jpg                                 frames extracted per clip (``frames_dir``),
                                                              sorted by name = temporal order
    train.csv, test.csv                                       optional PMR/OGM-GE split: rows ``clip,EMO``

Without split files, a seeded split holds out ``test_fraction`` of the clips (MISNet: a random 6,698 /
744 split), or of the actors with ``split_by='actor'`` (speaker-independent, harder).
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from av_snn_ros.preprocessing import PreprocessConfig

from .paper_datasets import (ClipDataset, ClipSample, check_split, list_images, load_audio_window,
                             paper_config, pick_indices, read_image, require_dir, seeded_split)

# Index order of the OGM-GE / PMR reference loaders, so label ids match their checkpoints and CSVs.
CREMA_D_CLASSES = ('NEU', 'HAP', 'SAD', 'FEA', 'DIS', 'ANG')
CREMA_D_SPLITS = ('train', 'test')
DEFAULT_FRAMES_DIR = 'Image-01-FPS'
_CLIP_RE = re.compile(r'^(?P<actor>\d+)_(?P<sentence>[A-Z]+)_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]+)$')


@dataclass(frozen=True)
class CremaItem:
    clip: str
    label: int
    actor: str
    audio: Path
    frames: tuple[Path, ...]


def parse_clip(clip: str) -> tuple[str, int]:
    """``1001_DFA_ANG_XX`` -> (actor ``1001``, label index); ``ValueError`` for another pattern/emotion."""
    m = _CLIP_RE.match(clip)
    if m is None:
        raise ValueError(f'{clip!r} does not match {{ActorID}}_{{Sentence}}_{{Emotion}}_{{Level}}')
    if m['emotion'] not in CREMA_D_CLASSES:
        raise ValueError(f'{clip!r}: unknown emotion {m["emotion"]!r} (expected one of {CREMA_D_CLASSES})')
    return m['actor'], CREMA_D_CLASSES.index(m['emotion'])


def read_split_csv(path: Path) -> list[tuple[str, int]]:
    """PMR-style ``clip,EMO`` rows (an optional header is skipped); the label must match the clip name."""
    rows = []
    with open(path, encoding='utf-8-sig', newline='') as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if not row or not row[0].strip():
                continue
            if len(row) < 2:
                raise ValueError(f'{path}:{line_no}: expected "clip,label", got {row!r}')
            clip, emo = row[0].strip(), row[1].strip()
            if line_no == 1 and emo not in CREMA_D_CLASSES:
                continue   # header
            if emo not in CREMA_D_CLASSES:
                raise ValueError(f'{path}:{line_no}: unknown label {emo!r} (expected one of {CREMA_D_CLASSES})')
            try:
                _, label = parse_clip(clip)
            except ValueError as exc:
                raise ValueError(f'{path}:{line_no}: {exc}') from exc
            if CREMA_D_CLASSES[label] != emo:
                raise ValueError(f'{path}:{line_no}: label {emo} contradicts the clip name {clip}')
            rows.append((clip, label))
    if not rows:
        raise ValueError(f'{path}: no rows')
    return rows


class CremaD(ClipDataset):
    """CREMA-D clips: the utterance centred in one window plus ``cfg.timesteps`` key frames.

    Args:
        root: data set folder (layout in the module docstring).
        split: ``train`` or ``test``.
        cfg: preprocessing (default ``paper_config('crema_d')``: 3 s, T=4, 128x128, RGB).
        frames_dir: folder of per-clip frame folders, relative to ``root`` (or absolute).
        seed: split (without CSVs), order and random frames.
        frame_sampling: ``random`` (T random frames, sorted; default for train) or ``uniform`` (evenly
            spaced; default for test).
        split_csv_dir: folder with ``train.csv``/``test.csv``; default: ``root`` if both are there.
        test_fraction, split_by: seeded split when there are no CSV files (``clip`` or ``actor``).
        skip_missing: skip clips without audio or frames (listed in ``self.skipped``) instead of raising.
        num: keep the first ``num`` samples of the seeded order.
    """

    classes = CREMA_D_CLASSES

    def __init__(self, root: str | Path, split: str = 'train', cfg: PreprocessConfig | None = None,
                 frames_dir: str | Path = DEFAULT_FRAMES_DIR, seed: int = 0, frame_sampling: str | None = None,
                 split_csv_dir: str | Path | None = None, test_fraction: float = 0.1, split_by: str = 'clip',
                 skip_missing: bool = False, num: int | None = None) -> None:
        check_split(split, CREMA_D_SPLITS)
        super().__init__(cfg or paper_config('crema_d'), seed,
                         frame_sampling or ('random' if split == 'train' else 'uniform'))
        self.root = Path(root)
        audio_dir = require_dir(self.root / 'AudioWAV', 'CREMA-D audio folder (AudioWAV/{clip}.wav)')
        frame_root = require_dir(self.root / frames_dir, f'CREMA-D frames folder ({frames_dir}/{{clip}}/*.jpg)')

        clips = self._split_clips(audio_dir, split, split_csv_dir, test_fraction, split_by)
        items, self.skipped = [], []
        for clip, label in clips:
            audio, frame_dir = audio_dir / f'{clip}.wav', frame_root / clip
            frames = tuple(list_images(frame_dir)) if frame_dir.is_dir() else ()
            if not audio.is_file() or not frames:
                problem = (f'missing audio {audio}' if not audio.is_file()
                           else f'no frames (*.jpg/*.png) in {frame_dir}')
                if not skip_missing:
                    raise FileNotFoundError(f'CREMA-D clip {clip}: {problem} (pass skip_missing=True to skip)')
                self.skipped.append(clip)
                continue
            items.append(CremaItem(clip, label, parse_clip(clip)[0], audio, frames))
        self._finalize(items, num)

    def _split_clips(self, audio_dir: Path, split: str, split_csv_dir: str | Path | None, test_fraction: float,
                     split_by: str) -> list[tuple[str, int]]:
        csv_dir = Path(split_csv_dir) if split_csv_dir is not None else self.root
        csv_files = [csv_dir / f'{s}.csv' for s in CREMA_D_SPLITS]
        if split_csv_dir is not None or all(p.is_file() for p in csv_files):
            path = csv_dir / f'{split}.csv'
            if not path.is_file():
                raise FileNotFoundError(f'CREMA-D split file not found: {path} (rows "clip,EMO")')
            self.split_source = str(path)
            return read_split_csv(path)
        if split_by not in ('clip', 'actor'):
            raise ValueError(f"split_by must be 'clip' or 'actor', got {split_by!r}")
        clips = []
        for path in sorted(audio_dir.glob('*.wav')):
            try:
                actor, label = parse_clip(path.stem)
            except ValueError as exc:
                raise ValueError(f'{path}: {exc}') from exc
            clips.append((path.stem, actor, label))
        if not clips:
            raise ValueError(f'no .wav files in {audio_dir}')
        keys = [c if split_by == 'clip' else a for c, a, _ in clips]
        test = seeded_split(keys, test_fraction, self.seed)
        self.split_source = f'seeded {split_by} split, test_fraction={test_fraction}, seed={self.seed}'
        return [(c, label) for (c, _, label), k in zip(clips, keys) if (k in test) == (split == 'test')]

    def _raw(self, i: int) -> ClipSample:
        item: CremaItem = self.items[i]
        audio = load_audio_window(item.audio, self.cfg)
        picks = pick_indices(len(item.frames), self.cfg.timesteps, self.frame_sampling, self._rng(i))
        decoded = {k: read_image(item.frames[k]) for k in set(picks)}
        return ClipSample(audio=audio, frames=tuple(decoded[k] for k in picks), label=item.label,
                          clip=item.clip)
