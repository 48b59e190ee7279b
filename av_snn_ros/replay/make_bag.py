"""``av-snn make-bag``: record AV-digits samples into a ROS 2 bag, as a robot's camera and mic would.

Each sample becomes one segment of the bag, ``segment_s`` long (the model's window W rounded up to a
whole number of classifier hops), starting on a multiple of the hop in header-stamp time, so one of the
classifier's windows covers each segment exactly:

- ``/image`` ``sensor_msgs/Image`` at ``--fps`` from one continuous camera clock; every frame inside a
  segment shows that sample's image (optionally upscaled / converted to rgb8 as a camera would);
- ``/audio`` ``av_snn_msgs/AudioChunk`` chunks of ``--chunk-ms`` from one continuous microphone clock
  (stamp = first sample); the segment's samples are the data set's window audio (utterance centred,
  zero padded), quantised to 16 bit (S16LE, as microphones deliver) or kept exact (``--audio-encoding
  F32LE``, for bit-exact comparisons with ``av-snn eval``);
- ``/ground_truth`` ``av_snn_msgs/LabelStamped`` per segment (``span_start`` = segment start, stamp =
  segment end).

Bag receive timestamps equal header stamps. The sample list (audio file, image index, label, span) and the
recording settings are stored as JSON in the bag's ``custom_data`` (``av_snn.samples``,
``av_snn.recording``), so a replay can be checked against ``av-snn eval`` sample by sample.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..preprocessing import PreprocessConfig
from . import bag_io

DEFAULT_FPS = 15.0
DEFAULT_CHUNK_MS = 20.0
DEFAULT_START_S = 1_700_000_000      # header stamps start here (an ordinary wall-clock epoch time)
MNIST_SIZE = 28
MIN_FRAMES_PER_STEP = 1              # every timestep of a window must see at least one frame


@dataclass(frozen=True)
class RecordingConfig:
    """How samples are laid out in time and encoded."""

    sample_rate: int = 16000
    window_s: float = 1.0
    timesteps: int = 4
    hop_s: float | None = None           # classifier hop; None = window_s (segments back to back)
    fps: float = DEFAULT_FPS
    chunk_ms: float = DEFAULT_CHUNK_MS
    image_size: int = MNIST_SIZE
    encoding: str = 'mono8'
    audio_encoding: str = bag_io.AUDIO_ENCODING_S16LE   # S16LE as microphones deliver; F32LE is lossless
    start_s: int = DEFAULT_START_S

    def __post_init__(self) -> None:
        if self.encoding not in ('mono8', 'rgb8'):
            raise ValueError(f'encoding must be mono8 or rgb8, got {self.encoding!r}')
        if self.audio_encoding not in bag_io.AUDIO_ENCODINGS:
            raise ValueError(f'audio_encoding must be one of {bag_io.AUDIO_ENCODINGS}, got {self.audio_encoding!r}')
        if self.image_size < 1:
            raise ValueError(f'image_size must be positive, got {self.image_size}')
        if self.fps <= 0 or self.fps * self.window_s / self.timesteps < MIN_FRAMES_PER_STEP:
            raise ValueError(f'fps={self.fps} gives less than one frame per timestep '
                             f'({self.window_s} s / {self.timesteps} steps)')
        if self.hop_s is not None and not 0 < self.hop_s:
            raise ValueError(f'hop_s must be positive, got {self.hop_s}')
        samples = self.chunk_ms * self.sample_rate / 1000.0
        if self.chunk_ms <= 0 or abs(samples - round(samples)) > 1e-9:
            raise ValueError(f'chunk_ms={self.chunk_ms} is not a whole number of samples at '
                             f'{self.sample_rate} Hz')

    @property
    def hop_ns(self) -> int:
        return int(round((self.hop_s or self.window_s) * bag_io.NS_PER_S))

    @property
    def segment_ns(self) -> int:
        """Segment length: W rounded up to whole hops, so every segment starts on the window grid."""
        window_ns = int(round(self.window_s * bag_io.NS_PER_S))
        return math.ceil(window_ns / self.hop_ns) * self.hop_ns

    @property
    def segment_samples(self) -> int:
        samples = self.segment_ns * self.sample_rate / bag_io.NS_PER_S
        if abs(samples - round(samples)) > 1e-6:
            raise ValueError(f'segment of {self.segment_ns} ns is not a whole number of samples')
        return int(round(samples))

    @property
    def chunk_samples(self) -> int:
        return int(round(self.chunk_ms * self.sample_rate / 1000.0))

    @property
    def t0_ns(self) -> int:
        """First segment start: ``start_s`` rounded up onto the classifier's hop grid."""
        return math.ceil(self.start_s * bag_io.NS_PER_S / self.hop_ns) * self.hop_ns


@dataclass(frozen=True)
class SampleRecord:
    """One recorded sample: where it came from and where it is in the bag."""

    index: int
    label: int
    label_name: str
    speaker: str
    audio_file: str
    image_index: int
    span_start_ns: int
    span_end_ns: int


def camera_frame(image: np.ndarray, size: int, encoding: str) -> np.ndarray:
    """What a camera looking at the digit delivers: the image at ``size`` px, mono8 or rgb8."""
    frame = np.asarray(image, dtype=np.uint8)
    if frame.shape[:2] != (size, size):
        import cv2
        frame = cv2.resize(frame, (size, size), interpolation=cv2.INTER_LINEAR)
    if encoding == 'rgb8':
        frame = np.repeat(frame[:, :, None], 3, axis=2) if frame.ndim == 2 else frame
    return np.ascontiguousarray(frame)


def write_samples_bag(out: str | Path, samples: Sequence, labels: Sequence[str], rec: RecordingConfig,
                      storage: str = 'mcap', extra_metadata: dict | None = None,
                      topics: dict[str, str] | None = None) -> list[SampleRecord]:
    """Write ``samples`` (objects with ``audio``, ``image``, ``label``, ``speaker``, ``audio_file``,
    ``image_index``) into a new bag at ``out``; returns where each sample went.

    ``topics`` may rename ``image``, ``audio`` and ``ground_truth`` (e.g. to mimic a robot's names).
    """
    if not samples:
        raise ValueError('no samples to record')
    topics = {'image': bag_io.IMAGE_TOPIC, 'audio': bag_io.AUDIO_TOPIC,
              'ground_truth': bag_io.GROUND_TRUTH_TOPIC, **(topics or {})}
    seg_ns, seg_n, t0 = rec.segment_ns, rec.segment_samples, rec.t0_ns
    window_n = int(round(rec.window_s * rec.sample_rate))
    n_segments = len(samples)
    lossless = rec.audio_encoding == bag_io.AUDIO_ENCODING_F32LE
    audio = np.zeros(n_segments * seg_n, dtype=np.float32 if lossless else np.int16)
    records = []
    for i, s in enumerate(samples):
        clip = np.asarray(s.audio, dtype=np.float32)
        if clip.shape != (window_n,):
            raise ValueError(f'sample {i}: expected {window_n} audio samples (one window), got {clip.shape}')
        audio[i * seg_n:i * seg_n + window_n] = clip if lossless else bag_io.float_to_s16(clip)
        records.append(SampleRecord(index=i, label=int(s.label), label_name=labels[int(s.label)],
                                    speaker=str(s.speaker), audio_file=str(s.audio_file),
                                    image_index=int(s.image_index), span_start_ns=t0 + i * seg_ns,
                                    span_end_ns=t0 + i * seg_ns + window_n * bag_io.NS_PER_S // rec.sample_rate))
    frames = [camera_frame(s.image, rec.image_size, rec.encoding) for s in samples]
    end_ns = t0 + n_segments * seg_ns

    # Events in receive-time order (a chunk is received when its last sample is recorded, see
    # BagWriter); at equal times: ground truth (closes a span), then audio, then image.
    events: list[tuple[int, int, int]] = []
    chunk_n = rec.chunk_samples

    def chunk_stamp(c: int) -> int:
        return t0 + c * chunk_n * bag_io.NS_PER_S // rec.sample_rate

    for c in range(len(audio) // chunk_n):
        events.append((chunk_stamp(c + 1), 1, c))
    frame_period_ns = bag_io.NS_PER_S / rec.fps
    j = 0
    while (t := t0 + int(round(j * frame_period_ns))) < end_ns:
        events.append((t, 2, j))
        j += 1
    for r in records:
        events.append((r.span_end_ns, 0, r.index))
    events.sort()

    with bag_io.BagWriter(out, storage=storage) as writer:
        writer.set_metadata(bag_io.SAMPLES_KEY, [asdict(r) for r in records])
        writer.set_metadata(bag_io.RECORDING_KEY, {**asdict(rec), 'segment_ns': seg_ns, 't0_ns': t0,
                                                   'topics': topics, **(extra_metadata or {})})
        for t, kind, idx in events:
            if kind == 0:
                r = records[idx]
                writer.write_label(r.span_start_ns, r.span_end_ns, r.label, r.label_name,
                                   topic=topics['ground_truth'])
            elif kind == 1:
                writer.write_audio(chunk_stamp(idx), audio[idx * chunk_n:(idx + 1) * chunk_n], rec.sample_rate,
                                   topic=topics['audio'])
            else:
                writer.write_image(t, frames[(t - t0) // seg_ns], encoding=rec.encoding, topic=topics['image'])
    return records


# ---------------------------------------------------------------------------------------------- CLI

def card_reference(card) -> dict:
    """How a bag's recording metadata names the card whose preprocessing it follows.

    ``card`` is relative to the repository (share dir) when the card is in it, else the card's own
    folder and file name: never absolute, since a bag outlives the machine that wrote it. The card's
    name and weights hash identify it wherever it moves. ``card`` is a :class:`ModelCard`.
    """
    from ..paths import share_dir
    path = Path(card.path).resolve()
    try:
        ref = path.relative_to(Path(share_dir()).resolve()).as_posix()
    except ValueError:
        ref = f'{path.parent.name}/{path.name}'
    return {'card': ref, 'card_name': card.name, 'card_weights_sha256': card.weights_sha256}


def _preprocess_config(card: str | None) -> tuple[PreprocessConfig, dict]:
    """The card's preprocessing (so the bag matches the model; the shipped default card if present)
    and :func:`card_reference` of the card (``{'card': None}`` without one)."""
    from ..model_card import ModelCard
    from ..paths import default_model_card

    if card is None:
        default = default_model_card()
        if not default.is_file():
            return PreprocessConfig(), {'card': None}
        card = str(default)
    loaded = ModelCard.load(card, verify=False)       # only the preprocessing is used: no weights loaded
    return loaded.preprocessing, card_reference(loaded)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--data-root', type=Path, default=None,
                        help='folder with fsdd/ and mnist/ (default: ../shared/data beside the checkout)')
    parser.add_argument('--out', type=Path, required=True, help='bag folder to create (must not exist)')
    parser.add_argument('--split', default='test', choices=('train', 'val', 'test'),
                        help='data split (default test = held-out speakers)')
    parser.add_argument('--protocol', default='clean', choices=('clean', 'noisy'))
    parser.add_argument('--speakers', nargs='+', default=None, help='speakers (default: the split\'s)')
    parser.add_argument('--num', type=int, default=None, help='first N samples of the seeded order')
    parser.add_argument('--seed', type=int, default=0, help='pairing / order / corruption seed')
    parser.add_argument('--storage', default='mcap', choices=bag_io.STORAGES)
    parser.add_argument('--fps', type=float, default=DEFAULT_FPS, help='camera frame rate')
    parser.add_argument('--chunk-ms', type=float, default=DEFAULT_CHUNK_MS, help='audio chunk length')
    parser.add_argument('--image-size', type=int, default=MNIST_SIZE, help='camera frame size in px')
    parser.add_argument('--encoding', default='mono8', choices=('mono8', 'rgb8'), help='camera encoding')
    parser.add_argument('--audio-encoding', default=bag_io.AUDIO_ENCODING_S16LE, choices=bag_io.AUDIO_ENCODINGS,
                        help='S16LE (as a microphone) or F32LE (lossless: replay equals eval exactly)')
    parser.add_argument('--card', default=None,
                        help='model card whose preprocessing (sample rate, window) the bag follows '
                             '(default: the shipped default model)')
    parser.add_argument('--hop-s', type=float, default=None,
                        help="the classifier's window.hop_s if it does not divide the window length")


def main(args: argparse.Namespace) -> int:
    from av_snn_training.data.av_digits import LABELS, AVDigits

    from ..paths import default_data_root

    data_root = args.data_root or default_data_root()
    if data_root is None:
        raise SystemExit('av-snn make-bag: no data root; pass --data-root DIR (with fsdd/ and mnist/)')
    cfg, card = _preprocess_config(args.card)
    rec = RecordingConfig(sample_rate=cfg.sample_rate, window_s=cfg.window_s, timesteps=cfg.timesteps,
                          hop_s=args.hop_s, fps=args.fps, chunk_ms=args.chunk_ms, image_size=args.image_size,
                          encoding=args.encoding, audio_encoding=args.audio_encoding)
    dataset = AVDigits(data_root, split=args.split, cfg=cfg, protocol=args.protocol, seed=args.seed,
                       speakers=args.speakers, num=args.num)
    samples = [dataset.raw(i) for i in range(len(dataset))]
    records = write_samples_bag(
        args.out, samples, LABELS, rec, storage=args.storage,
        extra_metadata={'split': args.split, 'protocol': args.protocol, 'seed': args.seed,
                        'speakers': list(dataset.speakers), 'num': len(dataset), **card,
                        'preprocessing': asdict(cfg)})
    duration = (records[-1].span_end_ns - records[0].span_start_ns) / bag_io.NS_PER_S
    size = sum(f.stat().st_size for f in Path(args.out).rglob('*') if f.is_file())
    print(f'wrote {args.out} ({args.storage}, {size / 1e6:.2f} MB): {len(records)} samples of speakers '
          f'{", ".join(dataset.speakers)} ({args.split}, {args.protocol}), {duration:.1f} s, '
          f'{rec.fps:g} fps {rec.image_size}x{rec.image_size} {rec.encoding}, {rec.chunk_ms:g} ms {rec.audio_encoding} '
          'audio chunks')
    return 0
