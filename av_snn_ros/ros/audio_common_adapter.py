"""audio_common input: ``audio_common_msgs/AudioDataStamped`` + ``AudioInfo`` -> ``av_snn_msgs/AudioChunk``.

For robots whose microphone runs ros-drivers/audio_common's ``audio_capture`` (``format: wave``): it
publishes raw PCM on ``audio_stamped`` and the stream's format on ``audio_info``. The ``audio_common_adapter``
node republishes each chunk as an ``AudioChunk`` on ``audio``, where the classifier listens:

    ros2 run av_snn_ros audio_common_adapter --ros-args -r audio_stamped:=/mic/audio_stamped \\
        -r audio_info:=/mic/audio_info -r audio:=/mic/audio_chunk

Field mapping (docs/runtime.md): ``header`` <- ``AudioDataStamped.header``; ``sample_rate``, ``channels``
<- ``AudioInfo``; ``encoding`` <- ``AudioInfo.sample_format`` (S16LE or F32LE); ``data`` <-
``AudioDataStamped.audio.data`` (interleaved PCM, unchanged). Compressed streams (``coding_format`` mp3)
are refused: the classifier needs PCM.
"""
from __future__ import annotations

import sys
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from . import qos
from .conversions import MessageError

NODE_NAME = 'audio_common_adapter'
STAMPED_TOPIC = 'audio_stamped'
INFO_TOPIC = 'audio_info'
AUDIO_TOPIC = 'audio'
#: AudioInfo.sample_format (GStreamer raw audio names, as audio_capture uses) -> AudioChunk.encoding
SAMPLE_FORMATS = {'S16LE': 'S16LE', 'F32LE': 'F32LE'}
#: AudioInfo.coding_format values that mean uncompressed PCM (audio_capture: "wave")
PCM_CODINGS = ('wave', 'wav', 'pcm', 'raw', '')


def chunk_fields(stamped, info) -> dict[str, Any]:
    """The ``AudioChunk`` fields for one ``AudioDataStamped`` under the stream's ``AudioInfo``.

    Raises :class:`~av_snn_ros.ros.conversions.MessageError` (reason ``audio_coding`` or ``audio_encoding``)
    for a stream the classifier cannot read; the sizes and rates are checked by the classifier as usual.
    """
    coding = info.coding_format.strip().lower()
    if coding not in PCM_CODINGS:
        raise MessageError('audio_coding', f'audio_common stream is {info.coding_format!r}, not PCM: '
                           "set audio_capture's format parameter to wave")
    encoding = SAMPLE_FORMATS.get(info.sample_format.strip().upper())
    if encoding is None:
        raise MessageError('audio_encoding', f'audio_common sample_format {info.sample_format!r} is not one of '
                           f'{", ".join(SAMPLE_FORMATS)}')
    return {'header': stamped.header, 'sample_rate': int(info.sample_rate), 'channels': int(info.channels),
            'encoding': encoding, 'data': bytes(stamped.audio.data)}


def to_audio_chunk(stamped, info):
    """``av_snn_msgs/AudioChunk`` from an ``AudioDataStamped`` and its ``AudioInfo`` (see :func:`chunk_fields`)."""
    from av_snn_msgs.msg import AudioChunk
    return AudioChunk(**chunk_fields(stamped, info))


class AudioCommonAdapter(Node):
    """Subscribes ``audio_stamped`` + ``audio_info``, publishes ``AudioChunk`` on ``audio``; chunks before
    the first ``AudioInfo`` or in a format the classifier cannot read are dropped, counted, warned once."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        from audio_common_msgs.msg import AudioDataStamped, AudioInfo
        from av_snn_msgs.msg import AudioChunk
        self.info = None
        self.converted = 0
        self.dropped: dict[str, int] = {}
        self._pub = self.create_publisher(AudioChunk, AUDIO_TOPIC, qos.driver_qos(qos.DRIVER_DEPTH))
        # reliable, volatile, depth 1 matches a volatile or a transient-local audio_info publisher
        # (a transient-local subscription would not match a volatile one)
        self.create_subscription(AudioInfo, INFO_TOPIC, self._on_info, 1)
        self.create_subscription(AudioDataStamped, STAMPED_TOPIC, self._on_audio, qos.driver_qos(qos.DRIVER_DEPTH))

    def _on_info(self, msg) -> None:
        self.info = msg

    def _drop(self, reason: str, text: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        if self.dropped[reason] == 1:              # once per reason: a wrong format repeats every chunk
            self.get_logger().warning(f'dropping audio [{reason}]: {text}')

    def _on_audio(self, msg) -> None:
        if self.info is None:
            self._drop('no_audio_info', f'no AudioInfo received on {INFO_TOPIC} yet')
            return
        try:
            chunk = to_audio_chunk(msg, self.info)
        except MessageError as exc:
            self._drop(exc.reason, str(exc))
            return
        self._pub.publish(chunk)
        self.converted += 1


def main(args: list[str] | None = None) -> int:
    """``audio_common_adapter [--ros-args ...]``: spin :class:`AudioCommonAdapter`; 1 without audio_common_msgs."""
    rclpy.init(args=args)
    node = None
    try:
        node = AudioCommonAdapter()
        rclpy.spin(node)
    except ImportError as exc:
        rclpy.logging.get_logger(NODE_NAME).error(
            f'audio_common_msgs is not installed ({exc}): install ros-$ROS_DISTRO-audio-common-msgs')
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
