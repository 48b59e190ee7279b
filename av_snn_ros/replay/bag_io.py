"""Read and write the project's ROS 2 bags with ``rosbags`` (pure Python: no rclpy, no rosbag2).

Bags hold what a robot records: ``sensor_msgs/Image`` frames, ``av_snn_msgs/AudioChunk`` PCM chunks and,
for evaluation, ``av_snn_msgs/LabelStamped`` ground truth. The project's custom message types are
registered from their ``.msg`` files (installed share dir or source tree) when writing, and from the
definitions stored in the bag itself when reading, so any bag written here reads back anywhere.

Time is integer nanoseconds everywhere; ``stamp_ns``/``time_msg`` convert to and from header stamps.
"""
from __future__ import annotations

import json
import os
import re
import struct
import sys
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..preprocessing import pcm_to_float

NS_PER_S = 1_000_000_000

# Default topics (absolute: bags record resolved names); robots' bags are mapped with `--remap`.
IMAGE_TOPIC = '/image'
COMPRESSED_IMAGE_TOPIC = '/image/compressed'
AUDIO_TOPIC = '/audio'
GROUND_TRUTH_TOPIC = '/ground_truth'

IMAGE_TYPE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE_TYPE = 'sensor_msgs/msg/CompressedImage'
AUDIO_TYPE = 'av_snn_msgs/msg/AudioChunk'
LABEL_TYPE = 'av_snn_msgs/msg/LabelStamped'
CLASSIFICATION_TYPE = 'av_snn_msgs/msg/Classification'
CUSTOM_MSG_PACKAGE = 'av_snn_msgs'
CUSTOM_MSG_NAMES = ('AudioChunk', 'Classification', 'LabelStamped')

STORAGES = ('mcap', 'sqlite3')
BAG_VERSION = 9                       # rosbag2 metadata version written by Jazzy/Kilted
#: the ROS distribution whose message definitions the writer serializes with (``make_typestore``),
#: recorded as the bag's ``ros_distro`` like ``ros2 bag record`` does (rosbags would write 'rosbags')
ROS_DISTRO = 'kilted'
SAMPLES_KEY = 'av_snn.samples'        # custom_data key: JSON list of the recorded samples
RECORDING_KEY = 'av_snn.recording'    # custom_data key: JSON dict describing how the bag was made

# sensor_msgs/Image encodings this module writes/decodes -> channels
IMAGE_ENCODINGS = {'mono8': 1, 'rgb8': 3, 'bgr8': 3}
AUDIO_ENCODING_S16LE = 'S16LE'
AUDIO_ENCODING_F32LE = 'F32LE'
AUDIO_ENCODINGS = (AUDIO_ENCODING_S16LE, AUDIO_ENCODING_F32LE)
_S16_SCALE = 32768.0                  # pcm_to_float divides S16 by this
_CDR_HEADER_BYTES = 4                 # encapsulation: representation id (2 B) + options (2 B)
_CDR_BE, _CDR_LE = 0, 1               # second byte of the representation id (plain CDR)
_CDR_STAMP_END = _CDR_HEADER_BYTES + 8


def stamp_ns(stamp: Any) -> int:
    """A ``builtin_interfaces/Time`` (rosbags or rclpy message) -> integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def header_stamp_ns(raw: bytes) -> int:
    """Header stamp of a CDR-serialized message whose first field is ``std_msgs/Header``.

    Reads only the 12 bytes after the encapsulation header (sec int32, nanosec uint32), so a player can
    pace and measure by sensor time without deserializing images.
    """
    if len(raw) < _CDR_STAMP_END or raw[0] != 0 or raw[1] not in (_CDR_BE, _CDR_LE):
        raise ValueError('not a CDR message with a leading std_msgs/Header')
    sec, nanosec = struct.unpack_from('<iI' if raw[1] == _CDR_LE else '>iI', raw, _CDR_HEADER_BYTES)
    return sec * NS_PER_S + nanosec


def find_msg_dir() -> Path:
    """The folder with ``av_snn_msgs``' ``.msg`` files: installed share dir first, then the source tree."""
    candidates = []
    for prefix in (os.environ.get('VIRTUAL_ENV'), sys.prefix,
                   *os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep)):
        if prefix:
            candidates.append(Path(prefix) / 'share' / CUSTOM_MSG_PACKAGE / 'msg')
    candidates.append(Path(__file__).resolve().parents[2] / CUSTOM_MSG_PACKAGE / 'msg')
    for candidate in candidates:
        if all((candidate / f'{name}.msg').is_file() for name in CUSTOM_MSG_NAMES):
            return candidate
    raise FileNotFoundError(
        f'cannot find {CUSTOM_MSG_PACKAGE}/msg/*.msg (looked in {", ".join(map(str, candidates))}); '
        'install the interface package with scripts/install.sh')


def make_typestore(msg_dir: Path | None = None):
    """A rosbags typestore for ROS 2 :data:`ROS_DISTRO` plus the project's custom messages."""
    from rosbags.typesys import get_types_from_msg

    store = distro_typestore()
    msg_dir = Path(msg_dir) if msg_dir is not None else find_msg_dir()
    types = {}
    for name in CUSTOM_MSG_NAMES:
        types.update(get_types_from_msg((msg_dir / f'{name}.msg').read_text(),
                                        f'{CUSTOM_MSG_PACKAGE}/msg/{name}'))
    store.register(types)
    return store


def distro_typestore():
    """rosbags' typestore of :data:`ROS_DISTRO`'s standard messages."""
    from rosbags.typesys import Stores, get_typestore
    return get_typestore(Stores[f'ROS2_{ROS_DISTRO.upper()}'])


# ------------------------------------------------------------------------------------------ writing

_ROSBAGS_DISTRO = re.compile(r'^(\s*ros_distro:) rosbags\s*$', re.MULTILINE)


def _with_real_distro(metadata_yaml: str) -> str:
    """rosbags' metadata text with ``ros_distro`` set to :data:`ROS_DISTRO`."""
    text, n = _ROSBAGS_DISTRO.subn(rf'\1 {ROS_DISTRO}', metadata_yaml)
    if n != 1:
        raise RuntimeError('rosbags changed how it writes ros_distro; update bag_io._with_real_distro')
    return text


def _rosbag2_writer_class():
    """rosbags' ``Writer`` with what ``ros2 bag record`` writes and rosbags does not: the real
    ``ros_distro`` (metadata.yaml, the MCAP ``rosbag2`` metadata record, the sqlite3 ``schema`` table)
    and, on MCAP channels, rosbag2's ``topic_type_hash`` metadata (the RIHS01 type hash) beside
    ``offered_qos_profiles``, as rosbag2_storage_mcap's ``create_topic`` does."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.rosbag2 import storage_mcap as mcap
    from rosbags.rosbag2.storage_sqlite3 import Sqlite3Writer

    class McapStorage(mcap.McapWriter):
        def add_connection(self, connection, offered_qos_profiles: str) -> None:
            metadata = BytesIO()
            for key, value in (('offered_qos_profiles', offered_qos_profiles),
                               ('topic_type_hash', connection.digest)):
                mcap.write_string(metadata, key)
                mcap.write_string(metadata, value)
            self.channels.append(mcap.Channel(connection.id, connection.msgtype, connection.topic,
                                              connection.ext.serialization_format, metadata.getvalue()))
            self.channel_stats[connection.id] = 0
            mcap.write_channel(self.chunk.bio, self.channels[-1], self.schemas)

        def close(self, version: int, metadata: str) -> None:
            super().close(version, _with_real_distro(metadata))

    class SqliteStorage(Sqlite3Writer):
        SQLITE_SCHEMA = Sqlite3Writer.SQLITE_SCHEMA.replace("'rosbags'", f"'{ROS_DISTRO}'")

        def close(self, version: int, metadata: str) -> None:
            super().close(version, _with_real_distro(metadata))

    if "'rosbags'" not in Sqlite3Writer.SQLITE_SCHEMA:
        raise RuntimeError('rosbags changed its sqlite3 schema; update bag_io._rosbag2_writer_class')

    class Rosbag2Writer(Writer):
        STORAGE_PLUGINS = {StoragePlugin.MCAP: McapStorage, StoragePlugin.SQLITE3: SqliteStorage}

        def close(self) -> None:
            super().close()
            self.metapath.write_text(_with_real_distro(self.metapath.read_text()))

    return Rosbag2Writer


class BagWriter:
    """Write frames, audio chunks and labels into a new rosbag2 bag (``mcap`` or ``sqlite3``).

    Receive timestamps are those of a recorder with no transport delay: a frame or label is received at
    its header stamp, an audio chunk when its last sample has been recorded (stamp = first sample, plus
    the chunk's duration), as a microphone delivers it. A player paced by receive time reproduces the
    sensor timing, and bag time (``/clock`` in replay) never precedes the data it carries.

    Use as a context manager; ``path`` must not exist yet.
    """

    def __init__(self, path: str | os.PathLike, storage: str = 'mcap', typestore=None) -> None:
        from rosbags.rosbag2 import StoragePlugin

        if storage not in STORAGES:
            raise ValueError(f'storage must be one of {STORAGES}, got {storage!r}')
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f'{self.path} already exists; choose a new bag path')
        plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
        self.store = typestore if typestore is not None else make_typestore()
        self._writer = _rosbag2_writer_class()(self.path, version=BAG_VERSION, storage_plugin=plugin)
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> 'BagWriter':
        self._writer.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._writer.close()

    def set_metadata(self, key: str, value: Any) -> None:
        """Store ``value`` as JSON in the bag's ``custom_data`` (metadata.yaml)."""
        self._writer.set_custom_data(key, json.dumps(value, sort_keys=True))

    def _time(self, ns: int):
        if ns < 0:
            raise ValueError(f'stamps must be non-negative, got {ns} ns')
        return self.store.types['builtin_interfaces/msg/Time'](sec=ns // NS_PER_S, nanosec=ns % NS_PER_S)

    def _header(self, ns: int, frame_id: str):
        return self.store.types['std_msgs/msg/Header'](stamp=self._time(ns), frame_id=frame_id)

    def _connection(self, topic: str, msgtype: str):
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=self.store)
            self._connections[topic] = conn
        elif conn.msgtype != msgtype:
            raise ValueError(f'topic {topic} already holds {conn.msgtype}, cannot write {msgtype}')
        return conn

    def _write(self, topic: str, msgtype: str, receive_ns: int, msg: Any) -> None:
        self.write_raw(topic, msgtype, receive_ns, self.store.serialize_cdr(msg, msgtype))

    def write_raw(self, topic: str, msgtype: str, receive_ns: int, raw: bytes) -> None:
        """One already serialized (CDR) message, e.g. copied from another bag; ``msgtype`` must be in
        the typestore (its definition is stored in the bag)."""
        conn = self._connection(topic, msgtype)
        self._writer.write(conn, receive_ns, bytes(raw))
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def write_image(self, stamp: int, frame: np.ndarray, encoding: str = 'mono8',
                    frame_id: str = 'camera', topic: str = IMAGE_TOPIC) -> None:
        """One ``sensor_msgs/Image``: ``frame`` is HxW (mono8) or HxWx3 uint8 matching ``encoding``."""
        if encoding not in IMAGE_ENCODINGS:
            raise ValueError(f'encoding must be one of {sorted(IMAGE_ENCODINGS)}, got {encoding!r}')
        frame = np.asarray(frame)
        channels = IMAGE_ENCODINGS[encoding]
        if frame.dtype != np.uint8:
            raise TypeError(f'frames must be uint8, got {frame.dtype}')
        if frame.ndim == 3 and frame.shape[2] == 1:
            frame = frame[:, :, 0]
        if (channels == 1 and frame.ndim != 2) or (channels == 3 and (frame.ndim != 3 or frame.shape[2] != 3)):
            raise ValueError(f'frame shape {frame.shape} does not match encoding {encoding}')
        height, width = frame.shape[:2]
        image_cls = self.store.types[IMAGE_TYPE]
        msg = image_cls(header=self._header(stamp, frame_id), height=height, width=width, encoding=encoding,
                        is_bigendian=0, step=width * channels,
                        data=np.ascontiguousarray(frame).reshape(-1))
        self._write(topic, IMAGE_TYPE, stamp, msg)

    def write_audio(self, stamp: int, pcm: np.ndarray, sample_rate: int, channels: int = 1,
                    frame_id: str = 'microphone', topic: str = AUDIO_TOPIC) -> None:
        """One ``AudioChunk`` (interleaved when ``channels`` > 1); stamp = first sample, received once
        its last sample is recorded.

        ``pcm`` int16 is written as S16LE, float32 (in [-1, 1]) as F32LE.
        """
        pcm = np.asarray(pcm)
        if pcm.dtype == np.int16:
            encoding, wire = AUDIO_ENCODING_S16LE, '<i2'
        elif pcm.dtype == np.float32:
            encoding, wire = AUDIO_ENCODING_F32LE, '<f4'
        else:
            raise TypeError(f'pcm must be int16 (S16LE) or float32 (F32LE), got {pcm.dtype}')
        if pcm.size % channels:
            raise ValueError(f'{pcm.size} samples is not a whole number of {channels}-channel frames')
        audio_cls = self.store.types[AUDIO_TYPE]
        data = np.frombuffer(pcm.astype(wire).tobytes(), dtype=np.uint8)
        msg = audio_cls(header=self._header(stamp, frame_id), sample_rate=sample_rate, channels=channels,
                        encoding=encoding, data=data)
        self._write(topic, AUDIO_TYPE, stamp + (pcm.size // channels) * NS_PER_S // sample_rate, msg)

    def write_label(self, span_start: int, span_end: int, class_id: int, label: str,
                    frame_id: str = '', topic: str = GROUND_TRUTH_TOPIC) -> None:
        """One ``LabelStamped`` for ``[span_start, span_end]``, received at the span's end."""
        if span_end <= span_start:
            raise ValueError(f'empty label span [{span_start}, {span_end}]')
        label_cls = self.store.types[LABEL_TYPE]
        msg = label_cls(header=self._header(span_end, frame_id), span_start=self._time(span_start),
                        class_id=int(class_id), label=str(label))
        self._write(topic, LABEL_TYPE, span_end, msg)


def float_to_s16(audio: np.ndarray) -> np.ndarray:
    """float32 [-1, 1] -> int16 with the scale ``pcm_to_float`` inverts (round to nearest, clip)."""
    audio = np.asarray(audio, dtype=np.float32)
    return np.clip(np.rint(audio * _S16_SCALE), -_S16_SCALE, _S16_SCALE - 1).astype(np.int16)


# ------------------------------------------------------------------------------------------ reading

@dataclass(frozen=True)
class BagMessage:
    """One message as stored: topic, type, receive time and the raw CDR bytes."""

    topic: str
    msgtype: str
    time_ns: int
    raw: bytes = field(repr=False)


@dataclass(frozen=True)
class LabelSpan:
    """A ground-truth label over ``[start_ns, end_ns]``."""

    start_ns: int
    end_ns: int
    class_id: int
    label: str


class BagError(ValueError):
    """A bag cannot be opened or read (truncated, corrupt, files missing); the message says which and why."""


def _error_text(exc: BaseException) -> str:
    """One line for an error raised by the storage parser on a damaged file."""
    if isinstance(exc, MemoryError):      # a corrupt length field asked for an impossible allocation
        return 'a record claims an impossible size (corrupt length field)'
    text = ' '.join(str(exc).split()) or exc.__class__.__name__
    return text if len(text) <= 200 else text[:200] + '…'


@dataclass
class ReadStats:
    """What one pass over a bag's messages read, compared with what its metadata says it holds.

    ``expected``: message count per topic from the bag's metadata; ``read``: messages the storage
    delivered; ``undecodable``: delivered but not deserializable; ``errors``: storage errors that ended
    the pass early. Topics not asked for are not counted.
    """

    expected: dict[str, int] = field(default_factory=dict)
    read: dict[str, int] = field(default_factory=dict)
    undecodable: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def unread(self) -> dict[str, int]:
        """Per topic: messages the metadata lists that the storage never delivered (only topics > 0)."""
        out = {t: n - self.read.get(t, 0) for t, n in self.expected.items()}
        return {t: n for t, n in out.items() if n > 0}

    def lost(self, topic: str) -> int:
        """Messages of ``topic`` not available to the caller: unread plus undecodable."""
        return self.unread().get(topic, 0) + self.undecodable.get(topic, 0)

    def as_dict(self) -> dict[str, Any]:
        topics = sorted(set(self.expected) | set(self.read))
        return {'per_topic': {t: {'expected': self.expected.get(t, 0), 'read': self.read.get(t, 0),
                                  'unread': self.unread().get(t, 0), 'undecodable': self.undecodable.get(t, 0)}
                              for t in topics},
                'storage_errors': list(self.errors)}


class BagReader:
    """Open a bag (any storage), list its topics, iterate raw messages and decode them.

    Message types are registered from the definitions stored in the bag, so bags from other
    machines (other message versions) decode without the local ``.msg`` files.

    A damaged bag never raises the storage parser's own exceptions: opening it raises :class:`BagError`
    with one line saying why, and a pass over the messages that hits damage stops there and records it
    in its :class:`ReadStats` (compare ``read`` with ``expected`` to see what was lost).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        from rosbags.rosbag2 import Reader

        self.path = Path(path)
        if not (self.path / 'metadata.yaml').is_file():
            raise FileNotFoundError(f'{self.path} is not a rosbag2 bag (no metadata.yaml)')
        try:
            self._reader = Reader(self.path)
        except Exception as exc:   # rosbags raises several types for a bad metadata.yaml
            raise BagError(f'cannot read bag {self.path}: {_error_text(exc)}') from exc
        self.type_errors: dict[str, str] = {}    # topic -> why its stored definition did not register

    def __enter__(self) -> 'BagReader':
        try:
            self._reader.open()
            self.store = distro_typestore()
        except Exception as exc:   # truncated / corrupt storage: one clear line
            self._close_quietly()
            raise BagError(f'cannot read bag {self.path}: {_error_text(exc)}') from exc
        self.type_errors = self._register_types()
        return self

    def _register_types(self) -> dict[str, str]:
        """Register the bag's stored message definitions; ``{topic: why not}`` for those that fail.

        One topic with a definition that cannot be parsed (an exotic IDL, a damaged schema) must not
        make the whole bag unreadable: its messages just do not decode.
        """
        from rosbags.interfaces import MessageDefinitionFormat
        from rosbags.typesys import get_types_from_idl, get_types_from_msg

        errors = {}
        for conn in self._reader.connections:
            if conn.msgtype in self.store.types or not conn.msgdef.data:
                continue
            try:
                if conn.msgdef.format == MessageDefinitionFormat.IDL:
                    self.store.register(get_types_from_idl(conn.msgdef.data))
                else:
                    self.store.register(get_types_from_msg(conn.msgdef.data, conn.msgtype))
            except Exception as exc:   # rosbags' parsers raise several types
                errors[conn.topic] = f'{conn.msgtype}: its stored definition does not parse ({_error_text(exc)})'
        return errors

    def __exit__(self, exc_type, exc, tb) -> None:
        self._close_quietly()

    def _close_quietly(self) -> None:
        try:
            self._reader.close()
        except Exception:   # closing a half-opened damaged bag must not hide the error that got us here
            pass

    @property
    def topics(self) -> dict[str, str]:
        """topic -> message type."""
        return {conn.topic: conn.msgtype for conn in self._reader.connections}

    @property
    def message_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for conn in self._reader.connections:
            counts[conn.topic] = counts.get(conn.topic, 0) + conn.msgcount
        return counts

    @property
    def start_ns(self) -> int:
        return int(self._reader.start_time)

    @property
    def end_ns(self) -> int:
        return int(self._reader.end_time)

    @property
    def custom_data(self) -> dict[str, Any]:
        """The bag's ``custom_data``, JSON values decoded (others kept as strings)."""
        out: dict[str, Any] = {}
        for key, value in (self._reader.storage.metadata.custom or {}).items():
            try:
                out[key] = json.loads(value)
            except ValueError:
                out[key] = value
        return out

    def read_stats(self, topics: Sequence[str]) -> ReadStats:
        """A fresh :class:`ReadStats` expecting the metadata's message counts of ``topics``."""
        counts = self.message_counts
        return ReadStats(expected={t: counts.get(t, 0) for t in topics})

    def messages(self, topics: Sequence[str] | None = None, stats: ReadStats | None = None
                 ) -> Iterator[BagMessage]:
        """Raw messages in receive-time order, optionally only on ``topics``.

        With ``stats``, every delivered message is counted, and storage damage ends the pass with the
        reason recorded there instead of an exception.
        """
        conns = [c for c in self._reader.connections if topics is None or c.topic in topics]
        if topics is not None and not conns:
            return
        try:
            for conn, t_ns, raw in self._reader.messages(connections=conns):
                if stats is not None:
                    stats.read[conn.topic] = stats.read.get(conn.topic, 0) + 1
                yield BagMessage(conn.topic, conn.msgtype, int(t_ns), bytes(raw))
        except Exception as exc:   # the storage parser on a damaged file raises many types
            if stats is None:
                raise BagError(f'cannot read bag {self.path}: {_error_text(exc)}') from exc
            stats.errors.append(_error_text(exc))

    def decode(self, message: BagMessage) -> Any:
        """Deserialize one raw message into a rosbags message object."""
        return self.store.deserialize_cdr(message.raw, message.msgtype)

    def try_decode(self, message: BagMessage, stats: ReadStats) -> Any | None:
        """:meth:`decode`, or None (counted as undecodable in ``stats``) for a corrupt message."""
        try:
            return self.decode(message)
        except Exception:   # rosbags' deserializer raises several types for corrupt CDR
            stats.undecodable[message.topic] = stats.undecodable.get(message.topic, 0) + 1
            return None

    def ground_truth(self, topic: str = GROUND_TRUTH_TOPIC, stats: ReadStats | None = None) -> list[LabelSpan]:
        """All ``LabelStamped`` spans on ``topic``, in time order (empty when the bag has none).

        Labels that cannot be read or decoded are skipped and counted in ``stats`` (give one from
        :meth:`read_stats` to know how many of the bag's labels the list lacks).
        """
        if self.topics.get(topic) not in (None, LABEL_TYPE):
            raise ValueError(f'{topic} holds {self.topics[topic]}, not {LABEL_TYPE}')
        stats = stats if stats is not None else self.read_stats([topic])
        spans = []
        for message in self.messages([topic], stats):
            msg = self.try_decode(message, stats)
            if msg is None:
                continue
            start, end = stamp_ns(msg.span_start), stamp_ns(msg.header.stamp)
            if end <= start:                         # a corrupt stamp: not a label we can score
                stats.undecodable[topic] = stats.undecodable.get(topic, 0) + 1
                continue
            spans.append(LabelSpan(start, end, int(msg.class_id), str(msg.label)))
        return sorted(spans, key=lambda s: (s.start_ns, s.end_ns))


def image_to_array(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` (mono8 / rgb8 / bgr8) into HxW or HxWx3 RGB uint8."""
    if msg.encoding not in IMAGE_ENCODINGS:
        raise ValueError(f'unsupported image encoding {msg.encoding!r}')
    channels = IMAGE_ENCODINGS[msg.encoding]
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if data.size < msg.height * msg.step or msg.step < msg.width * channels:
        raise ValueError(f'image data ({data.size} B, step {msg.step}) too small for '
                         f'{msg.width}x{msg.height} {msg.encoding}')
    rows = data[:msg.height * msg.step].reshape(msg.height, msg.step)[:, :msg.width * channels]
    if channels == 1:
        return rows.reshape(msg.height, msg.width).copy()
    img = rows.reshape(msg.height, msg.width, channels)
    return (img[:, :, ::-1] if msg.encoding == 'bgr8' else img).copy()


def audio_to_float(msg: Any) -> np.ndarray:
    """Decode an ``AudioChunk`` into mono float32 in [-1, 1] (the node's decoding, shared)."""
    return pcm_to_float(np.asarray(msg.data, dtype=np.uint8), msg.encoding, int(msg.channels))
