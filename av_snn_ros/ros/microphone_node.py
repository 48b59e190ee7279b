"""``microphone``: a minimal PortAudio (sounddevice) driver publishing ``av_snn_msgs/AudioChunk`` on ``audio``.

Each chunk is stamped with the capture time of its first sample: PortAudio's ADC time of the buffer,
mapped onto the node's clock, then carried forward by sample count, so consecutive chunks are exactly
contiguous (no stamp jitter for the windower to absorb). An input overflow or a clock step larger than
:data:`REANCHOR_TOLERANCE_S` re-anchors the count on the measured time, which the classifier then sees
as a gap. A missing PortAudio library or device is one clear error and a non-zero exit.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np
from rclpy.node import Node

from ..windowing import NS_PER_S
from . import qos
from .drivers import DeviceError, run_driver
from .conversions import MAX_AUDIO_CHANNELS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, array_to_audio
from .params import ParamSpec, declare_parameters_from

NODE_NAME = 'microphone'
AUDIO_TOPIC = 'audio'
ENCODINGS = ('S16LE', 'F32LE')
#: measured capture time further than this from the sample-count time starts a new anchor
REANCHOR_TOLERANCE_S = 0.05
MAX_CHUNK_FRAMES = 1 << 16

SPECS = (
    ParamSpec('device', '', "Input device: '' for the default, a device name (substring) or an index."),
    ParamSpec('sample_rate', 16000, 'Capture rate in Hz (the classifier resamples to its model rate).',
              range=(MIN_SAMPLE_RATE, MAX_SAMPLE_RATE)),
    ParamSpec('channels', 1, 'Channels captured (the classifier averages them to mono).',
              range=(1, MAX_AUDIO_CHANNELS)),
    ParamSpec('chunk_size', 320, 'Frames per published chunk (320 = 20 ms at 16 kHz).',
              range=(16, MAX_CHUNK_FRAMES)),
    ParamSpec('encoding', 'S16LE', 'Sample format of the published chunks.', choices=ENCODINGS),
    ParamSpec('frame_id', 'microphone', 'header.frame_id of the chunks.'),
    ParamSpec('qos.depth', qos.DRIVER_DEPTH, 'Publisher history depth (reliable, volatile).', range=(1, 10000)),
)


class ChunkStamper:
    """Stamps consecutive chunks by sample count from an anchor (integer nanoseconds)."""

    def __init__(self, sample_rate: int, tolerance_s: float = REANCHOR_TOLERANCE_S) -> None:
        if sample_rate <= 0:
            raise ValueError(f'sample_rate must be > 0, got {sample_rate}')
        self.rate = sample_rate
        self.tolerance_ns = int(tolerance_s * NS_PER_S)
        self._anchor_ns: int | None = None
        self._count = 0
        self.reanchors = 0

    def stamp(self, measured_ns: int, frames: int, force_reanchor: bool = False) -> int:
        """Stamp of a chunk of ``frames`` whose first sample was measured at ``measured_ns``."""
        expected = None if self._anchor_ns is None else self._anchor_ns + self._count * NS_PER_S // self.rate
        if expected is None or force_reanchor or abs(measured_ns - expected) > self.tolerance_ns:
            if expected is not None:
                self.reanchors += 1
            self._anchor_ns, self._count = int(measured_ns), 0
            expected = self._anchor_ns
        self._count += frames
        return expected


def _import_sounddevice():
    try:
        import sounddevice
    except ImportError as exc:
        raise DeviceError("microphone: the Python package 'sounddevice' is not installed "
                          '(pip install sounddevice; it also needs the PortAudio library, '
                          f'e.g. apt install libportaudio2): {exc}') from None
    except OSError as exc:   # sounddevice raises OSError when libportaudio cannot be loaded
        raise DeviceError(f'microphone: the PortAudio library was not found (apt install libportaudio2): '
                          f'{exc}') from None
    return sounddevice


class MicrophoneNode(Node):
    """Publishes captured audio; call :meth:`start` to open the device (raises :class:`DeviceError`)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        errors = declare_parameters_from(self, SPECS)
        if errors:
            raise ValueError('invalid parameters:\n  ' + '\n  '.join(errors))
        value = self.get_parameter
        self.device = value('device').value
        self.sample_rate = int(value('sample_rate').value)
        self.channels = int(value('channels').value)
        self.chunk_size = int(value('chunk_size').value)
        self.encoding = value('encoding').value
        self.frame_id = value('frame_id').value
        from av_snn_msgs.msg import AudioChunk
        self._pub = self.create_publisher(AudioChunk, AUDIO_TOPIC, qos.driver_qos(int(value('qos.depth').value)))
        self._stamper = ChunkStamper(self.sample_rate)
        self._stream = None
        self.overflows = 0
        self.published = 0

    def _device_arg(self) -> int | str | None:
        if self.device == '':
            return None
        return int(self.device) if self.device.lstrip('-').isdigit() else self.device

    def start(self) -> None:
        """Open and start the input stream."""
        sd = _import_sounddevice()
        device = self._device_arg()
        try:
            stream = sd.InputStream(device=device, samplerate=self.sample_rate, channels=self.channels,
                                    dtype='float32', blocksize=self.chunk_size, callback=self._on_audio)
            stream.start()
        except Exception as exc:  # noqa: BLE001 - PortAudioError, ValueError: report them as one message
            try:
                inputs = [d['name'] for d in sd.query_devices() if d.get('max_input_channels', 0) > 0]
            except Exception:  # noqa: BLE001
                inputs = []
            listing = ', '.join(repr(n) for n in inputs) or 'none found'
            raise DeviceError(f'microphone: cannot open input device {self.device or "(default)"!r} at '
                              f'{self.sample_rate} Hz x {self.channels} ch: {exc}. Input devices: {listing}') from None
        self._stream = stream
        self.get_logger().info(f'capturing {self.sample_rate} Hz x {self.channels} ch in chunks of '
                               f'{self.chunk_size} frames from {self.device or "the default device"}')

    def _on_audio(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio callback (its own thread): stamp and publish one chunk."""
        now_ns = self.get_clock().now().nanoseconds
        adc, current = getattr(time_info, 'inputBufferAdcTime', 0.0), getattr(time_info, 'currentTime', 0.0)
        if adc and current and current >= adc:
            measured = now_ns - int((current - adc) * NS_PER_S)
        else:   # some host APIs report no ADC time: the chunk ended about now
            measured = now_ns - frames * NS_PER_S // self.sample_rate
        overflow = bool(getattr(status, 'input_overflow', False))
        if overflow:
            self.overflows += 1
        stamp = self._stamper.stamp(measured, frames, force_reanchor=overflow)
        self._pub.publish(array_to_audio(np.asarray(indata, dtype=np.float32), stamp, self.sample_rate,
                                         self.encoding, self.channels, self.frame_id))
        self.published += 1

    def stop(self) -> None:
        if self._stream is not None:
            try:
                self._stream.stop()
                self._stream.close()
            finally:
                self._stream = None


def main(args: list[str] | None = None) -> int:
    """``microphone_node [--ros-args ...]``; exits 1 with one error line when capture cannot start."""
    return run_driver(MicrophoneNode, NODE_NAME, args)


if __name__ == '__main__':
    sys.exit(main())
