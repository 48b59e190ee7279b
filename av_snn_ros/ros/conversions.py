"""Message <-> array conversions: the only ROS-specific decoding in the package.

Images become uint8 RGB ``HxWx3`` or gray ``HxW`` arrays and audio chunks mono float32 PCM, exactly the
raw formats the training data set yields, so everything after this module is the shared preprocessing.
Any malformed message raises :class:`MessageError` with a short ``reason`` key that the node counts and
warns about (throttled), never an unhandled exception.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Time

from ..preprocessing import pcm_to_float
from ..windowing import MAX_SAMPLE_RATE, NS_PER_S

#: largest image side accepted (guards against garbage headers allocating gigabytes)
MAX_IMAGE_SIDE = 16384
#: default cap on an image's pixel count (4K UHD): a compressed image declaring more is refused before
#: it is decoded, so a 70-byte PNG cannot make the decoder allocate gigabytes (node parameter
#: ``input.max_image_pixels``)
DEFAULT_MAX_IMAGE_PIXELS = 3840 * 2160
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_PNG_IEND = b'IEND\xaeB`\x82'
#: JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic; not DHT/JPG/DAC)
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
#: bytes after a JPEG's end-of-image marker tolerated (some encoders pad)
_JPEG_TAIL = 64
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


def _check_pixels(width: int, height: int, max_pixels: int, what: str) -> None:
    if not (0 < height <= MAX_IMAGE_SIDE and 0 < width <= MAX_IMAGE_SIDE):
        raise MessageError('image_size', f'{what} size {width}x{height} outside 1..{MAX_IMAGE_SIDE}')
    if width * height > max_pixels:
        raise MessageError('image_size', f'{what} {width}x{height} has {width * height} pixels, more than '
                           f'input.max_image_pixels = {max_pixels}')


def image_to_array(msg, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[int, np.ndarray]:
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
    _check_pixels(width, height, max_pixels, 'image')
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


def _png_size(data: bytes) -> tuple[int, int]:
    # the IHDR chunk must come first: length 13, type, width, height (big-endian)
    if len(data) < 33 or data[12:16] != b'IHDR':
        raise MessageError('image_truncated', f'PNG of {len(data)} bytes has no IHDR header')
    if not data.rstrip(b'\0').endswith(_PNG_IEND):
        raise MessageError('image_truncated', f'PNG of {len(data)} bytes does not end with IEND (truncated)')
    _check_png_chunks(data)
    return int.from_bytes(data[16:20], 'big'), int.from_bytes(data[20:24], 'big')


def _check_png_chunks(data: bytes) -> None:
    """Every chunk's CRC, before libpng sees the data: a damaged PNG is then a counted ``image_decode``
    instead of a libpng error line on stderr per message (stderr is not throttled)."""
    i = len(_PNG_SIGNATURE)
    while i + 12 <= len(data):
        length = int.from_bytes(data[i:i + 4], 'big')
        end = i + 8 + length
        if end + 4 > len(data):
            raise MessageError('image_truncated', f'PNG chunk at byte {i} runs past the end of the data')
        if zlib.crc32(data[i + 4:end]) != int.from_bytes(data[end:end + 4], 'big'):
            raise MessageError('image_decode', f'PNG chunk {data[i + 4:i + 8]!r} at byte {i} fails its CRC')
        if data[i + 4:i + 8] == b'IEND':
            return
        i = end + 4
    raise MessageError('image_truncated', f'PNG of {len(data)} bytes ends inside a chunk')


def _jpeg_size(data: bytes) -> tuple[int, int]:
    if b'\xff\xd9' not in data[-_JPEG_TAIL:]:
        raise MessageError('image_truncated', f'JPEG of {len(data)} bytes has no end-of-image marker '
                           '(truncated)')
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise MessageError('image_decode', f'JPEG marker expected at byte {i}')
        marker = data[i + 1]
        if marker == 0xFF:                      # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], 'big')
        if marker in _JPEG_SOF:
            if length < 7 or i + 9 > len(data):
                break
            return int.from_bytes(data[i + 7:i + 9], 'big'), int.from_bytes(data[i + 5:i + 7], 'big')
        if marker == 0xDA or length < 2:       # scan data before any frame header: not a valid JPEG
            break
        i += 2 + length
    raise MessageError('image_decode', f'JPEG of {len(data)} bytes has no frame header')


def compressed_image_size(data: bytes) -> tuple[str, int, int]:
    """``(format, width, height)`` read from a PNG or JPEG header without decoding any pixels.

    Raises :class:`MessageError` (``image_format``, ``image_truncated``, ``image_decode``) for anything
    else: the decoder is only ever handed data whose size is known and allowed.
    """
    if data.startswith(_PNG_SIGNATURE):
        return ('png', *_png_size(data))
    if data.startswith(b'\xff\xd8\xff'):
        return ('jpeg', *_jpeg_size(data))
    raise MessageError('image_format', f'CompressedImage data of {len(data)} bytes is neither PNG nor JPEG '
                       f'(starts with {data[:8].hex()}); publish jpeg or png (image_transport compressed)')


def compressed_image_to_array(msg, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[int, np.ndarray]:
    """``sensor_msgs/CompressedImage`` (JPEG or PNG) -> ``(stamp_ns, uint8 RGB or gray)``.

    The header is checked before decoding (format, declared size against ``max_pixels``, truncation).
    Raises :class:`MessageError` with reason ``image_format``, ``image_size``, ``image_truncated`` or
    ``image_decode``; never lets a decoder error escape.
    """
    import cv2
    data = _buffer(msg.data)
    if data.size == 0:
        raise MessageError('image_decode', f'empty CompressedImage (format {msg.format!r})')
    fmt, width, height = compressed_image_size(data.tobytes())
    _check_pixels(width, height, max_pixels, f'{fmt} image')
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise MessageError('image_decode', f'cannot decode {fmt} CompressedImage ({data.size} bytes): '
                           f'{str(exc).strip().splitlines()[-1]}') from exc
    if image is None:
        raise MessageError('image_decode', f'cannot decode {fmt} CompressedImage ({data.size} bytes)')
    if image.shape[:2] != (height, width):
        raise MessageError('image_decode', f'{fmt} image decoded to {image.shape[1]}x{image.shape[0]}, '
                           f'its header says {width}x{height}')
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

