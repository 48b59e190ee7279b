"""Message <-> array conversions: the only ROS-specific decoding in the package.

Images become uint8 RGB ``HxWx3`` or gray ``HxW`` arrays and audio chunks mono float32 PCM, exactly the
raw formats the training data set yields, so everything after this module is the shared preprocessing.
Any malformed message raises :class:`MessageError` with a short ``reason`` key that the node counts and
warns about (throttled), never an unhandled exception.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Time

from ..preprocessing import pcm_to_float
from ..windowing import MAX_SAMPLE_RATE, NS_PER_S

#: largest image side accepted (guards against garbage headers allocating gigabytes)
MAX_IMAGE_SIDE = 16384
#: lowest audio rate accepted: below it nothing speech-like survives, so it is a broken header
MIN_SAMPLE_RATE = 1000
#: most interleaved channels accepted in an audio chunk
MAX_AUDIO_CHANNELS = 64
#: 16-bit samples are reduced to 8 bits by keeping the high byte
_BITS_16_TO_8 = 8


class MessageError(ValueError):
    """A message that cannot be used; ``reason`` is a stable counter key (e.g. ``image_encoding``)."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason


@dataclass(frozen=True)
class _Encoding:
    channels: int
    bytes_per_channel: int
    to_rgb: tuple[int, ...] | None      # channel order giving RGB (None: gray)


#: sensor_msgs/Image encodings accepted (names as in sensor_msgs/image_encodings.hpp)
IMAGE_ENCODINGS: dict[str, _Encoding] = {
    'rgb8': _Encoding(3, 1, (0, 1, 2)),
    'bgr8': _Encoding(3, 1, (2, 1, 0)),
    'rgba8': _Encoding(4, 1, (0, 1, 2)),
    'bgra8': _Encoding(4, 1, (2, 1, 0)),
    'mono8': _Encoding(1, 1, None),
    '8uc1': _Encoding(1, 1, None),
    'mono16': _Encoding(1, 2, None),
}


def stamp_to_ns(stamp: Time) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds -> ``builtin_interfaces/Time`` (floor semantics for negative values)."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return Time(sec=sec, nanosec=nanosec)


def _buffer(data) -> np.ndarray:
    """A zero-copy uint8 view of a message's ``uint8[]`` field (``array.array``, bytes or list)."""
    if isinstance(data, (bytes, bytearray, memoryview)) or hasattr(data, 'buffer_info'):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(data, dtype=np.uint8)


def _to_8bit(values: np.ndarray) -> np.ndarray:
    return (values >> _BITS_16_TO_8).astype(np.uint8)


def image_to_array(msg) -> tuple[int, np.ndarray]:
    """``sensor_msgs/Image`` -> ``(stamp_ns, uint8 HxWx3 RGB or HxW gray)``.

    Honours ``step`` (row padding) and ``is_bigendian`` (16-bit encodings). Raises :class:`MessageError`
    with reason ``image_encoding``, ``image_size``, ``image_step`` or ``image_truncated``.
    """
    enc_name = msg.encoding.lower()
    enc = IMAGE_ENCODINGS.get(enc_name)
    if enc is None:
        raise MessageError('image_encoding', f'unsupported image encoding {msg.encoding!r}; accepted: '
                           f'{", ".join(IMAGE_ENCODINGS)} (or subscribe to CompressedImage)')
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if not (0 < height <= MAX_IMAGE_SIDE and 0 < width <= MAX_IMAGE_SIDE):
        raise MessageError('image_size', f'image size {width}x{height} outside 1..{MAX_IMAGE_SIDE}')
    row_bytes = width * enc.channels * enc.bytes_per_channel
    if step < row_bytes:
        raise MessageError('image_step', f'step {step} is smaller than width*channels*bytes = {row_bytes} '
                           f'for a {width}x{height} {enc_name} image')
    data = _buffer(msg.data)
    expected = step * height
    if data.size < expected:
        raise MessageError('image_truncated', f'{enc_name} image {width}x{height} with step {step} needs '
                           f'{expected} bytes, got {data.size}')
    if data.size > expected:
        raise MessageError('image_size', f'{enc_name} image {width}x{height} with step {step} should have '
                           f'{expected} bytes, got {data.size}')
    rows = data.reshape(height, step)[:, :row_bytes]
    if enc.bytes_per_channel == 2:
        dtype = np.dtype('>u2') if msg.is_bigendian else np.dtype('<u2')
        pixels = _to_8bit(np.ascontiguousarray(rows).view(dtype).reshape(height, width, enc.channels))
    else:
        pixels = rows.reshape(height, width, enc.channels)
    if enc.to_rgb is None:
        frame = pixels[:, :, 0]
    elif enc.to_rgb == (0, 1, 2) and enc.channels == 3:
        frame = pixels
    else:
        frame = pixels[:, :, list(enc.to_rgb)]
    return stamp_to_ns(msg.header.stamp), np.ascontiguousarray(frame)


def compressed_image_to_array(msg) -> tuple[int, np.ndarray]:
    """``sensor_msgs/CompressedImage`` (JPEG, PNG, ...) -> ``(stamp_ns, uint8 RGB or gray)``.

    Raises :class:`MessageError` with reason ``image_decode`` when OpenCV cannot decode the data.
    """
    import cv2
    data = _buffer(msg.data)
    if data.size == 0:
        raise MessageError('image_decode', f'empty CompressedImage (format {msg.format!r})')
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise MessageError('image_decode', f'cannot decode CompressedImage of format {msg.format!r} '
                           f'({data.size} bytes)')
    if image.dtype == np.uint16:
        image = _to_8bit(image)
    elif image.dtype != np.uint8:
        raise MessageError('image_decode', f'decoded image has unsupported depth {image.dtype}')
    if image.ndim == 3:
        if image.shape[2] == 1:
            image = image[:, :, 0]
        elif image.shape[2] in (3, 4):
            image = image[:, :, 2::-1]                     # OpenCV decodes BGR(A)
        else:
            raise MessageError('image_decode', f'decoded image has {image.shape[2]} channels')
    if max(image.shape[:2]) > MAX_IMAGE_SIDE:
        raise MessageError('image_size', f'decoded image {image.shape[1]}x{image.shape[0]} too large')
    return stamp_to_ns(msg.header.stamp), np.ascontiguousarray(image)


def audio_to_array(msg) -> tuple[int, np.ndarray, int]:
    """``av_snn_msgs/AudioChunk`` -> ``(stamp_ns of the first sample, mono float32, sample_rate)``.

    Raises :class:`MessageError` with reason ``audio_rate``, ``audio_channels``, ``audio_encoding``,
    ``audio_empty``, ``audio_size`` or ``audio_nonfinite``.
    """
    rate, channels = int(msg.sample_rate), int(msg.channels)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise MessageError('audio_rate', f'sample_rate {rate} outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz')
    if not 1 <= channels <= MAX_AUDIO_CHANNELS:
        raise MessageError('audio_channels', f'channels {channels} outside 1..{MAX_AUDIO_CHANNELS}')
    enc = msg.encoding.upper()
    width = {'S16LE': 2, 'PCM_S16LE': 2, 'S16': 2, 'F32LE': 4, 'PCM_F32LE': 4, 'F32': 4}.get(enc)
    if width is None:
        raise MessageError('audio_encoding', f'unsupported audio encoding {msg.encoding!r} (use S16LE or F32LE)')
    data = _buffer(msg.data)
    if data.size == 0:
        raise MessageError('audio_empty', 'audio chunk carries no samples')
    if data.size % (width * channels):
        raise MessageError('audio_size', f'{data.size} bytes is not a whole number of {channels}-channel '
                           f'{enc} frames ({width * channels} bytes each)')
    try:
        samples = pcm_to_float(data, enc, channels)
    except ValueError as exc:
        reason = 'audio_nonfinite' if 'NaN' in str(exc) else 'audio_size'
        raise MessageError(reason, str(exc)) from exc
    return stamp_to_ns(msg.header.stamp), samples, rate


def classification_msg(prediction, frame_id: str = ''):
    """Build an ``av_snn_msgs/Classification`` from a :class:`~av_snn_ros.prediction.Prediction`."""
    from av_snn_msgs.msg import Classification
    msg = Classification()
    msg.header.stamp = ns_to_stamp(prediction.end_ns)          # window end, sensor time
    msg.header.frame_id = frame_id
    msg.window_start = ns_to_stamp(prediction.start_ns)
    msg.class_id = int(prediction.class_id)
    msg.label = prediction.label
    msg.confidence = float(prediction.confidence)
    msg.scores = [float(p) for p in prediction.scores]
    msg.labels = list(prediction.labels)
    msg.audio_class_id = int(prediction.audio_class_id)
    msg.audio_confidence = float(prediction.audio_confidence)
    msg.visual_class_id = int(prediction.visual_class_id)
    msg.visual_confidence = float(prediction.visual_confidence)
    msg.model_name = prediction.model_name
    msg.flags = sorted(prediction.flags)
    return msg


def array_to_image(frame: np.ndarray, stamp_ns: int, encoding: str = 'rgb8', frame_id: str = ''):
    """uint8 RGB/gray array -> ``sensor_msgs/Image`` (for drivers and tests). ``encoding``: rgb8, bgr8,
    mono8 (an RGB frame is converted; a gray frame only fits mono8 or is replicated for rgb8/bgr8)."""
    from sensor_msgs.msg import Image
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise ValueError(f'frame must be uint8, got {frame.dtype}')
    if encoding not in ('rgb8', 'bgr8', 'mono8'):
        raise ValueError(f'encoding must be rgb8, bgr8 or mono8, got {encoding!r}')
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if encoding == 'mono8':
        if frame.ndim == 3:
            from ..preprocessing import to_model_channels
            frame = to_model_channels(frame, 1)[:, :, 0]
    else:
        if frame.ndim == 2:
            frame = np.repeat(frame[:, :, None], 3, axis=2)
        if encoding == 'bgr8':
            frame = frame[:, :, ::-1]
    frame = np.ascontiguousarray(frame)
    msg = Image()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(frame.shape[0]), int(frame.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(frame.strides[0])
    msg.data = frame.tobytes()
    return msg


def array_to_audio(samples: np.ndarray, stamp_ns: int, sample_rate: int, encoding: str = 'S16LE',
                   channels: int = 1, frame_id: str = ''):
    """float32 PCM in [-1, 1] (``(n,)`` or ``(n, channels)``) -> ``av_snn_msgs/AudioChunk``."""
    from av_snn_msgs.msg import AudioChunk
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[:, None]
    if samples.shape[1] != channels:
        raise ValueError(f'samples have {samples.shape[1]} channels, expected {channels}')
    enc = encoding.upper()
    if enc == 'S16LE':
        data = np.clip(np.rint(samples * 32768.0), -32768, 32767).astype('<i2').tobytes()
    elif enc == 'F32LE':
        data = samples.astype('<f4').tobytes()
    else:
        raise ValueError(f'encoding must be S16LE or F32LE, got {encoding!r}')
    msg = AudioChunk()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.sample_rate = int(sample_rate)
    msg.channels = int(channels)
    msg.encoding = enc
    msg.data = data
    return msg

