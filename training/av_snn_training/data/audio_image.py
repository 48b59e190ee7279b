"""Audio-image data sets in the style of SMMT's UrbanSound8K-AV and CIFAR10-AV.

Each audio clip is paired with an image of the same class (a seeded permutation of the class's images,
used in order); the image is shown for the whole window (repeated over the T timesteps). SMMT published
its pairings as Kaggle archives whose layout is not documented; these loaders rebuild equivalent pairs from
the original data sets instead (see docs/data.md):

UrbanSound8K-AV::

    {audio_root}/metadata/UrbanSound8K.csv          published metadata (slice_file_name, fold, classID, class)
    {audio_root}/audio/fold{1..10}/{slice_file_name}
    {image_root}/{class}/*.jpg|png                  images per UrbanSound8K class name (user-provided)

    Split by published folds (``test_folds``, default fold 10); images split by a seeded hash
    (``image_test_fraction``) so train and test never share an image.

CIFAR10-AV::

    {image_root}/cifar-10-batches-py/data_batch_{1..5}, test_batch   CIFAR-10 python version
    {audio_root}/{class}/*.wav                      audio per CIFAR-10 class name (user-provided);
                                                    split by a seeded hash (``audio_test_fraction``), or
    {audio_root}/train/{class}/*.wav, test/{class}/*.wav   when those two folders exist.
"""
from __future__ import annotations

import csv
import functools
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from av_snn_ros.preprocessing import PreprocessConfig

from .paper_datasets import (ClipDataset, ClipSample, check_split, list_images, load_audio_window,
                             pair_by_class, paper_config, read_image, require_dir, require_file,
                             seeded_split)

URBANSOUND8K_CLASSES = ('air_conditioner', 'car_horn', 'children_playing', 'dog_bark', 'drilling',
                        'engine_idling', 'gun_shot', 'jackhammer', 'siren', 'street_music')   # by classID
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')
US8K_FOLDS = tuple(range(1, 11))
US8K_COLUMNS = ('slice_file_name', 'fold', 'classID', 'class')
CIFAR_TRAIN_BATCHES = tuple(f'data_batch_{k}' for k in range(1, 6))
CIFAR_TEST_BATCH = 'test_batch'
CIFAR_SIDE = 32
SPLITS = ('train', 'test')


@dataclass(frozen=True)
class PairItem:
    clip: str
    label: int
    audio: Path
    image: int          # index into the data set's image list/array


class _AudioImageDataset(ClipDataset):
    """Audio file + static image per sample."""

    def _image(self, index: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _raw(self, i: int) -> ClipSample:
        item: PairItem = self.items[i]
        image = self._image(item.image)
        return ClipSample(audio=load_audio_window(item.audio, self.cfg),
                          frames=(image,) * self.cfg.timesteps, label=item.label, clip=item.clip)


def _class_images(image_root: Path, classes: tuple[str, ...]) -> list[list[Path]]:
    out = []
    for name in classes:
        folder = require_dir(image_root / name, f'image folder for class {name!r}')
        files = list_images(folder)
        if not files:
            raise ValueError(f'{folder}: no images (*.jpg, *.png) for class {name!r}')
        out.append(files)
    return out


class UrbanSound8KAV(_AudioImageDataset):
    """UrbanSound8K clips paired with images of the same class (SMMT's UrbanSound8K-AV task)."""

    classes = URBANSOUND8K_CLASSES

    def __init__(self, audio_root: str | Path, image_root: str | Path, split: str = 'train',
                 cfg: PreprocessConfig | None = None, test_folds: tuple[int, ...] = (10,),
                 image_test_fraction: float = 0.2, seed: int = 0, num: int | None = None) -> None:
        check_split(split, SPLITS)
        super().__init__(cfg or paper_config('urbansound8k_av'), seed, 'uniform')
        if not test_folds or any(f not in US8K_FOLDS for f in test_folds):
            raise ValueError(f'test_folds must be a non-empty subset of {US8K_FOLDS}, got {test_folds}')
        audio_root, image_root = Path(audio_root), Path(image_root)
        meta = require_file(audio_root / 'metadata' / 'UrbanSound8K.csv', 'UrbanSound8K metadata')
        require_dir(audio_root / 'audio', 'UrbanSound8K audio folder (audio/fold{1..10}/)')
        clips = []
        for line_no, row in self._read_metadata(meta):
            fold, class_id = int(row['fold']), int(row['classID'])
            if (fold in test_folds) != (split == 'test'):
                continue
            path = audio_root / 'audio' / f'fold{fold}' / row['slice_file_name']
            if not path.is_file():
                raise FileNotFoundError(f'{meta}:{line_no}: audio file not found: {path}')
            clips.append((row['slice_file_name'], class_id, path))

        per_class = _class_images(image_root, self.classes)
        self._image_paths = [p for files in per_class for p in files]
        pools: dict[int, np.ndarray] = {}
        start = 0
        for label, files in enumerate(per_class):
            names = [str(p.relative_to(image_root)) for p in files]
            test = seeded_split(names, image_test_fraction, seed)
            chosen = [start + k for k, n in enumerate(names) if (n in test) == (split == 'test')]
            if not chosen:
                raise ValueError(f'class {self.classes[label]!r} has no {split} images in {image_root} '
                                 f'(it has {len(files)}; image_test_fraction={image_test_fraction})')
            pools[label] = np.array(chosen)
            start += len(files)
        clips.sort()
        pairs = pair_by_class([c[1] for c in clips], pools, seed)
        self._finalize([PairItem(name, label, path, int(img)) for (name, label, path), img in zip(clips, pairs)],
                       num)

    def _read_metadata(self, meta: Path):
        with open(meta, encoding='utf-8-sig', newline='') as f:
            reader = csv.DictReader(f)
            missing = [c for c in US8K_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f'{meta}: missing column(s) {missing} (published UrbanSound8K.csv has '
                                 f'{", ".join(US8K_COLUMNS)}, ...)')
            for line_no, row in enumerate(reader, start=2):
                try:
                    fold, class_id = int(row['fold']), int(row['classID'])
                except ValueError as exc:
                    raise ValueError(f'{meta}:{line_no}: fold/classID must be integers') from exc
                if fold not in US8K_FOLDS or not 0 <= class_id < len(self.classes):
                    raise ValueError(f'{meta}:{line_no}: fold {fold} / classID {class_id} out of range')
                if row['class'] != self.classes[class_id]:
                    raise ValueError(f'{meta}:{line_no}: class {row["class"]!r} does not match classID '
                                     f'{class_id} ({self.classes[class_id]!r})')
                yield line_no, row

    def _image(self, index: int) -> np.ndarray:
        return read_image(self._image_paths[index])


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR-10 batches are pickles: allow only the numpy array reconstruction they need, nothing else."""

    _ALLOWED = {('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
                ('numpy', 'ndarray'), ('numpy', 'dtype')}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f'refusing to load {module}.{name} from a CIFAR-10 batch')
        return super().find_class(module, name)


@functools.lru_cache(maxsize=4)
def _load_cifar_batch(path: str, mtime_ns: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, 'rb') as f:
            batch = _NumpyOnlyUnpickler(f, encoding='bytes').load()
        data, labels = np.asarray(batch[b'data']), np.asarray(batch[b'labels'])
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f'{path}: not a CIFAR-10 python batch (dict with b"data", b"labels"): {exc}') from exc
    side = CIFAR_SIDE * CIFAR_SIDE
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * side or len(labels) != len(data):
        raise ValueError(f'{path}: expected uint8 data (N, {3 * side}) and N labels, got {data.dtype} '
                         f'{data.shape} and {labels.shape}')
    images = data.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE).transpose(0, 2, 3, 1)   # (N, 32, 32, 3) RGB
    images = np.ascontiguousarray(images)
    images.setflags(write=False)
    return images, labels.astype(np.int64)


class Cifar10AV(_AudioImageDataset):
    """CIFAR-10 images paired with class-matching audio clips (SMMT's CIFAR10-AV task)."""

    classes = CIFAR10_CLASSES

    def __init__(self, audio_root: str | Path, image_root: str | Path, split: str = 'train',
                 cfg: PreprocessConfig | None = None, audio_test_fraction: float = 0.2, seed: int = 0,
                 num: int | None = None) -> None:
        check_split(split, SPLITS)
        super().__init__(cfg or paper_config('cifar10_av'), seed, 'uniform')
        audio_root, image_root = Path(audio_root), Path(image_root)
        batch_dir = require_dir(image_root / 'cifar-10-batches-py', 'CIFAR-10 python batches folder')
        names = CIFAR_TRAIN_BATCHES if split == 'train' else (CIFAR_TEST_BATCH,)
        parts = [_load_cifar_batch(str(p), p.stat().st_mtime_ns)
                 for p in (require_file(batch_dir / n, 'CIFAR-10 batch') for n in names)]
        self._images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        image_labels = np.concatenate([p[1] for p in parts])
        pools = {c: np.flatnonzero(image_labels == c) for c in range(len(self.classes))}

        pre_split = (audio_root / 'train').is_dir() and (audio_root / 'test').is_dir()
        base = audio_root / split if pre_split else audio_root
        clips = []
        for label, name in enumerate(self.classes):
            folder = require_dir(base / name, f'audio folder for class {name!r}')
            files = sorted(folder.glob('*.wav'))
            if not files:
                raise ValueError(f'{folder}: no .wav files for class {name!r}')
            if not pre_split:
                test = seeded_split([f.name for f in files], audio_test_fraction, seed)
                files = [f for f in files if (f.name in test) == (split == 'test')]
            clips += [(f'{name}/{f.name}', label, f) for f in files]
        pairs = pair_by_class([c[1] for c in clips], pools, seed)
        self._finalize([PairItem(name, label, path, int(img)) for (name, label, path), img in zip(clips, pairs)],
                       num)

    def _image(self, index: int) -> np.ndarray:
        return self._images[index].copy()
