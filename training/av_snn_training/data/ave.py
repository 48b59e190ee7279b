"""AVE (Audio-Visual Event, 28 classes) in its published layout plus extracted audio.

Layout of ``root`` (the published ``AVE_Dataset`` folder, plus ``audio/``)::

    AVE/{VideoID}.mp4                  published videos (10 s); frames are decoded with OpenCV
    Annotations.txt                    ``Category&VideoID&Quality&StartTime&EndTime`` (header line)
    trainSet.txt, valSet.txt, testSet.txt   same row format (a header line is tolerated)
    audio/{VideoID}.wav                the videos' sound tracks, extracted beforehand (OpenCV cannot read
                                       audio), e.g. ``ffmpeg -i AVE/X.mp4 -ac 1 -ar 16000 audio/X.wav``
                                       as the OGM-GE preprocessing does

Each row is one sample: its event segment ``[StartTime, EndTime)`` gives the audio (centred in the window)
and the frames (``candidates`` evenly spaced frames of the segment, of which T are picked: at random in
training, evenly spaced at test, as MISNet does). Classes are the sorted categories of Annotations.txt.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from av_snn_ros.preprocessing import PreprocessConfig

from .paper_datasets import (ClipDataset, ClipSample, check_split, load_audio_window, paper_config,
                             pick_indices, require_dir, require_file)

AVE_SPLITS = {'train': 'trainSet.txt', 'val': 'valSet.txt', 'test': 'testSet.txt'}
HEADER_FIRST_FIELD = 'Category'
DEFAULT_CANDIDATES = 10   # MISNet: 10 frames extracted per clip, 4 of them used


@dataclass(frozen=True)
class AveItem:
    video_id: str
    label: int
    start_s: float
    end_s: float
    video: Path
    audio: Path


def read_annotations(path: Path) -> list[tuple[str, str, float, float]]:
    """Rows ``(category, video_id, start_s, end_s)`` of an AVE annotation/split file."""
    rows = []
    for line_no, line in enumerate(path.read_text(encoding='utf-8-sig').splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split('&')]
        if line_no == 1 and fields[0] == HEADER_FIRST_FIELD:
            continue
        if len(fields) != 5:
            raise ValueError(f'{path}:{line_no}: expected Category&VideoID&Quality&StartTime&EndTime, '
                             f'got {line!r}')
        category, video_id, _quality, start, end = fields
        try:
            start_s, end_s = float(start), float(end)
        except ValueError as exc:
            raise ValueError(f'{path}:{line_no}: StartTime/EndTime must be numbers, got {start!r}, {end!r}') \
                from exc
        if not 0 <= start_s < end_s:
            raise ValueError(f'{path}:{line_no}: need 0 <= StartTime < EndTime, got {start_s}, {end_s}')
        rows.append((category, video_id, start_s, end_s))
    if not rows:
        raise ValueError(f'{path}: no annotation rows')
    return rows


def read_video_frames(path: Path, indices: list[int]) -> list[np.ndarray]:
    """Decode the given frame indices of a video as uint8 RGB (``ValueError`` naming the file on failure)."""
    import cv2
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ValueError(f'{path}: OpenCV cannot open this video')
        frames: dict[int, np.ndarray] = {}
        for idx in sorted(set(indices)):
            cap.set(cv2.CAP_PROP_POS_FRAMES, idx)
            ok, frame = cap.read()
            if not ok or frame is None:
                raise ValueError(f'{path}: cannot decode frame {idx}')
            frames[idx] = np.ascontiguousarray(frame[:, :, ::-1])   # BGR -> RGB
        return [frames[i] for i in indices]
    finally:
        cap.release()


def video_info(path: Path) -> tuple[float, int]:
    """(frames per second, frame count) of a video."""
    import cv2
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ValueError(f'{path}: OpenCV cannot open this video')
        fps, count = float(cap.get(cv2.CAP_PROP_FPS)), int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()
    if fps <= 0 or count <= 0:
        raise ValueError(f'{path}: video reports fps={fps}, frames={count}')
    return fps, count


class AVE(ClipDataset):
    """AVE events: the segment's audio centred in one window plus ``cfg.timesteps`` frames of the segment.

    Args:
        root: the ``AVE_Dataset`` folder (layout in the module docstring).
        split: ``train``, ``val`` or ``test`` (the published split files).
        cfg: preprocessing (default ``paper_config('ave')``: 10 s, T=4, 128x128, RGB).
        audio_dir, video_dir: folders relative to ``root`` (or absolute).
        candidates: evenly spaced candidate frames per segment.
        skip_missing: skip rows whose video or audio file is missing (listed in ``self.skipped``).
    """

    def __init__(self, root: str | Path, split: str = 'train', cfg: PreprocessConfig | None = None,
                 audio_dir: str | Path = 'audio', video_dir: str | Path = 'AVE', seed: int = 0,
                 frame_sampling: str | None = None, candidates: int = DEFAULT_CANDIDATES,
                 skip_missing: bool = False, num: int | None = None) -> None:
        check_split(split, tuple(AVE_SPLITS))
        super().__init__(cfg or paper_config('ave'), seed,
                         frame_sampling or ('random' if split == 'train' else 'uniform'))
        if candidates < 1:
            raise ValueError(f'candidates must be >= 1, got {candidates}')
        self.root, self.candidates = Path(root), int(candidates)
        annotations = read_annotations(require_file(self.root / 'Annotations.txt', 'AVE Annotations.txt'))
        self.classes = tuple(sorted({row[0] for row in annotations}))
        videos = require_dir(self.root / video_dir, 'AVE video folder (AVE/{VideoID}.mp4)')
        audios = require_dir(self.root / audio_dir, 'AVE audio folder ({VideoID}.wav extracted from the videos)')
        rows = read_annotations(require_file(self.root / AVE_SPLITS[split], f'AVE split file for {split!r}'))
        items, self.skipped = [], []
        for category, video_id, start_s, end_s in rows:
            if category not in self.classes:
                raise ValueError(f'{self.root / AVE_SPLITS[split]}: category {category!r} is not in '
                                 'Annotations.txt')
            video, audio = videos / f'{video_id}.mp4', audios / f'{video_id}.wav'
            missing = [p for p in (video, audio) if not p.is_file()]
            if missing:
                if not skip_missing:
                    raise FileNotFoundError(f'AVE video {video_id}: missing {missing[0]} '
                                            '(pass skip_missing=True to skip)')
                self.skipped.append(video_id)
                continue
            items.append(AveItem(video_id, self.classes.index(category), start_s, end_s, video, audio))
        self._finalize(items, num)

    def _raw(self, i: int) -> ClipSample:
        item: AveItem = self.items[i]
        audio = load_audio_window(item.audio, self.cfg, item.start_s, item.end_s)
        fps, count = video_info(item.video)
        first = min(count - 1, int(item.start_s * fps))
        last = max(first + 1, min(count, int(np.ceil(item.end_s * fps))))   # exclusive
        span = last - first
        candidates = [first + min(span - 1, int((k + 0.5) * span / self.candidates))
                      for k in range(self.candidates)]
        picks = pick_indices(len(candidates), self.cfg.timesteps, self.frame_sampling, self._rng(i))
        frames = read_video_frames(item.video, [candidates[k] for k in picks])
        return ClipSample(audio=audio, frames=tuple(frames), label=item.label,
                          clip=f'{item.video_id}_{item.start_s:g}_{item.end_s:g}')
