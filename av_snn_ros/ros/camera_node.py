"""``camera``: a minimal OpenCV camera driver publishing ``sensor_msgs/Image`` on ``image`` (or
``sensor_msgs/CompressedImage`` on ``image/compressed``).

The source is a V4L2 index (``'0'``), a video file or a stream URL. Frames are stamped with the node's
clock when grabbed. A missing device is one clear error and a non-zero exit; the end of a file stops
publishing (or restarts it with ``loop``).
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np
from rclpy.node import Node

from . import qos
from .conversions import MAX_IMAGE_SIDE, array_to_image, ns_to_stamp
from .drivers import DeviceError, run_driver
from .params import ParamSpec, declare_parameters_from

NODE_NAME = 'camera'
IMAGE_TOPIC = 'image'
COMPRESSED_IMAGE_TOPIC = 'image/compressed'
ENCODINGS = ('rgb8', 'bgr8', 'mono8')
MAX_FPS = 240.0
JPEG_QUALITY_RANGE = (1, 100)

SPECS = (
    ParamSpec('device', '0', 'Video source: a camera index (0 = /dev/video0), a video file or a stream URL.'),
    ParamSpec('fps', 15.0, 'Frames published per second (also requested from a camera).', range=(0.1, MAX_FPS)),
    ParamSpec('width', 0, 'Requested frame width (0: the driver default).', range=(0, MAX_IMAGE_SIDE)),
    ParamSpec('height', 0, 'Requested frame height (0: the driver default).', range=(0, MAX_IMAGE_SIDE)),
    ParamSpec('encoding', 'rgb8', 'Encoding of published Image messages.', choices=ENCODINGS),
    ParamSpec('compressed', False, 'Publish JPEG CompressedImage on image/compressed instead of Image.'),
    ParamSpec('jpeg_quality', 90, 'JPEG quality of compressed output.', range=JPEG_QUALITY_RANGE),
    ParamSpec('loop', False, 'Restart a video file at its end (live sources ignore this).'),
    ParamSpec('frame_id', 'camera', 'header.frame_id of the images.'),
    ParamSpec('qos.depth', qos.DRIVER_DEPTH, 'Publisher history depth (reliable, volatile).', range=(1, 10000)),
)


class CameraNode(Node):
    """Publishes frames from an OpenCV source; :meth:`start` opens it (raises :class:`DeviceError`)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        errors = declare_parameters_from(self, SPECS)
        if errors:
            raise ValueError('invalid parameters:\n  ' + '\n  '.join(errors))
        get = self.get_parameter
        self.device = get('device').value
        self.fps = float(get('fps').value)
        self.size = (int(get('width').value), int(get('height').value))
        self.encoding = get('encoding').value
        self.compressed = bool(get('compressed').value)
        self.jpeg_quality = int(get('jpeg_quality').value)
        self.loop = bool(get('loop').value)
        self.frame_id = get('frame_id').value
        depth = int(get('qos.depth').value)
        if self.compressed:
            from sensor_msgs.msg import CompressedImage
            self._pub = self.create_publisher(CompressedImage, COMPRESSED_IMAGE_TOPIC, qos.driver_qos(depth))
        else:
            from sensor_msgs.msg import Image
            self._pub = self.create_publisher(Image, IMAGE_TOPIC, qos.driver_qos(depth))
        self._cap = None
        self._timer = None
        self.published = 0
        self.read_failures = 0

    def _source(self) -> int | str:
        return int(self.device) if self.device.isdigit() else self.device

    def start(self) -> None:
        """Open the source and start the frame timer."""
        import cv2
        previous = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)   # our one message says it all
        try:
            cap = cv2.VideoCapture(self._source())
            opened = cap.isOpened()
        finally:
            cv2.utils.logging.setLogLevel(previous)
        if not opened:
            cap.release()
            kind = 'camera index' if self.device.isdigit() else 'video file or stream'
            hint = f' (is /dev/video{self.device} present and readable?)' if self.device.isdigit() else ''
            raise DeviceError(f'camera: cannot open {kind} {self.device!r}{hint}')
        if self.size[0]:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
        if self.size[1]:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
        cap.set(cv2.CAP_PROP_FPS, self.fps)
        self._cap = cap
        self._timer = self.create_timer(1.0 / self.fps, self._grab)
        self.get_logger().info(f'publishing {self._pub.topic_name} at {self.fps:g} fps from {self.device!r}')

    def _grab(self) -> None:
        import cv2
        ok, frame = self._cap.read()
        if not ok and self.loop and not self.device.isdigit():
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._cap.read()
        if not ok:
            self.read_failures += 1
            if not self.device.isdigit():
                self.get_logger().info(f'end of {self.device!r} after {self.published} frames')
                self.destroy_timer(self._timer)
                self._timer = None
            elif self.read_failures == 1:
                self.get_logger().warning(f'camera {self.device!r} returned no frame')
            return
        stamp = self.get_clock().now().nanoseconds
        self._pub.publish(self._message(frame, stamp))
        self.published += 1

    def _message(self, bgr: np.ndarray, stamp_ns: int):
        import cv2
        if bgr.ndim == 2:
            bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
        if self.compressed:
            from sensor_msgs.msg import CompressedImage
            ok, data = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if not ok:
                raise RuntimeError('JPEG encoding failed')
            msg = CompressedImage(format='jpeg', data=data.tobytes())
            msg.header.stamp = ns_to_stamp(stamp_ns)
            msg.header.frame_id = self.frame_id
            return msg
        rgb = bgr[:, :, ::-1]
        return array_to_image(rgb, stamp_ns, self.encoding, self.frame_id)

    def stop(self) -> None:
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def main(args: list[str] | None = None) -> int:
    """``camera_node [--ros-args ...]``; exits 1 with one error line when capture cannot start."""
    return run_driver(CameraNode, NODE_NAME, args)


if __name__ == '__main__':
    sys.exit(main())
