"""Drivers: camera on a real video file, microphone through a stand-in PortAudio module, and one clear
error with a non-zero exit when a device or library is missing (also for `av-snn run --demo`)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import types

import numpy as np
import pytest
from rclpy.parameter import Parameter

from av_snn_ros.ros import qos
from av_snn_ros.ros.conversions import audio_to_array, compressed_image_to_array, image_to_array, stamp_to_ns
from av_snn_ros.ros.drivers import DeviceError
from av_snn_ros.ros.microphone_node import ChunkStamper
from runtime_helpers import DEFAULT_TIMEOUT_S, Spinner, private_namespace, source_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NS = 1_000_000_000



class _Collector:
    def __init__(self):
        self.cond = threading.Condition()
        self.msgs = []

    def __call__(self, msg):
        with self.cond:
            self.msgs.append(msg)
            self.cond.notify_all()

    def wait(self, n, timeout=DEFAULT_TIMEOUT_S):
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.msgs) >= n, timeout), f'got {len(self.msgs)} of {n}'


# ------------------------------------------------------------------------------------------------ camera

@pytest.fixture(scope='module')
def video(tmp_path_factory, data_root):
    """A lossless (FFV1) video of real MNIST digits, 6 frames of 56x56."""
    import cv2
    images = np.load(data_root / 'mnist' / 'mnist.npz')['x_test'][:6]
    frames = [cv2.resize(np.repeat(im[:, :, None], 3, axis=2), (56, 56)) for im in images]
    frames = [np.ascontiguousarray(f * np.array([1.0, 0.8, 0.6])).astype(np.uint8) for f in frames]  # not gray
    path = tmp_path_factory.mktemp('video') / 'digits.avi'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'FFV1'), 30, (56, 56))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)                      # OpenCV writes BGR
    writer.release()
    return path, frames


@pytest.mark.parametrize('compressed', [False, True])
def test_camera_publishes_every_frame_of_a_video_file(ros_context, video, compressed):
    from sensor_msgs.msg import CompressedImage, Image
    from rclpy.node import Node

    from av_snn_ros.ros.camera_node import CameraNode
    path, frames = video
    ns = private_namespace('camera')
    node = CameraNode(context=ros_context, namespace=ns, parameter_overrides=[
        Parameter('device', value=str(path)), Parameter('fps', value=60.0),
        Parameter('compressed', value=compressed), Parameter('qos.depth', value=100)])
    listener = Node('camera_listener', namespace=ns, context=ros_context)
    got = _Collector()
    if compressed:
        listener.create_subscription(CompressedImage, 'image/compressed', got, qos.driver_qos(100))
    else:
        listener.create_subscription(Image, 'image', got, qos.driver_qos(100))
    with Spinner(ros_context, node, listener):
        deadline = time.monotonic() + DEFAULT_TIMEOUT_S
        while node.count_subscribers(node._pub.topic_name) < 1:     # start streaming once heard
            assert time.monotonic() < deadline
            threading.Event().wait(0.02)
        node.start()
        got.wait(len(frames))
    node.stop()
    assert node.published == len(frames)
    stamps = [stamp_to_ns(m.header.stamp) for m in got.msgs]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    for msg, bgr in zip(got.msgs, frames):
        if compressed:
            _, rgb = compressed_image_to_array(msg)
            assert msg.format == 'jpeg'
            assert np.abs(rgb.astype(int) - bgr[:, :, ::-1]).mean() < 4     # JPEG is lossy
        else:
            _, rgb = image_to_array(msg)
            assert msg.encoding == 'rgb8' and msg.header.frame_id == 'camera'
            np.testing.assert_array_equal(rgb, bgr[:, :, ::-1])
    listener.destroy_node()
    node.destroy_node()


def test_camera_missing_device_is_one_clear_error():
    proc = subprocess.run([sys.executable, '-m', 'av_snn_ros.ros.camera_node', '--ros-args',
                           '-p', 'device:=/nonexistent/video.avi'], env=source_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    err = proc.stderr + proc.stdout
    assert 'cannot open video file or stream' in err and '/nonexistent/video.avi' in err
    assert 'Traceback' not in err
    assert err.count('[ERROR]') == 1


# ------------------------------------------------------------------------------------------------ mic

def test_chunk_stamper_counts_samples_and_reanchors():
    s = ChunkStamper(16000, tolerance_s=0.05)
    t0 = 5 * NS
    # measured times jitter by +-3 ms; stamps follow the sample count exactly
    stamps = [s.stamp(t0 + i * 20_000_000 + (3_000_000 if i % 2 else -3_000_000), 320) for i in range(10)]
    assert stamps == [t0 - 3_000_000 + i * 20_000_000 for i in range(10)]
    assert s.reanchors == 0
    later = s.stamp(t0 + 10 * NS, 320)              # 10 s of missing input: new anchor
    assert later == t0 + 10 * NS and s.reanchors == 1
    assert s.stamp(later + 20_000_000, 320, force_reanchor=True) == later + 20_000_000
    assert s.reanchors == 2


def _fake_sounddevice(audio: np.ndarray, overflow_block: int | None = None, fail: Exception | None = None):
    """A stand-in for the sounddevice module: an input stream that delivers ``audio`` block by block in
    real time (like a sound card) and reports PortAudio-style ADC times."""
    module = types.ModuleType('sounddevice')

    class PortAudioError(Exception):
        pass

    class InputStream:
        def __init__(self, device, samplerate, channels, dtype, blocksize, callback):
            if fail is not None:
                raise fail
            self.rate, self.block, self.callback, self.channels = samplerate, blocksize, callback, channels
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._stop = threading.Event()

        def start(self):
            self._thread.start()

        def _run(self):
            start = time.monotonic()
            for k, i in enumerate(range(0, len(audio) - self.block + 1, self.block)):
                adc = start + i / self.rate
                end = adc + self.block / self.rate
                if self._stop.wait(max(0.0, end - time.monotonic())):   # the card fills the buffer
                    return
                data = np.repeat(audio[i:i + self.block, None], self.channels, axis=1)
                info = types.SimpleNamespace(inputBufferAdcTime=adc, currentTime=time.monotonic())
                status = types.SimpleNamespace(input_overflow=(k == overflow_block))
                self.callback(data, self.block, info, status)

        def stop(self):
            self._stop.set()
            self._thread.join(5)

        def close(self):
            pass

    module.InputStream = InputStream
    module.PortAudioError = PortAudioError
    module.query_devices = lambda: [{'name': 'Fake USB Mic', 'max_input_channels': 1},
                                    {'name': 'HDMI out', 'max_input_channels': 0}]
    return module


@pytest.fixture(scope='module')
def speech(data_root):
    from scipy.io import wavfile

    from av_snn_ros.preprocessing import resample
    sr, pcm = wavfile.read(data_root / 'fsdd' / 'recordings' / '3_jackson_0.wav')
    return resample(pcm.astype(np.float32) / 32768.0, sr, 16000)[:8000]     # 0.5 s of a spoken digit


def test_microphone_publishes_contiguous_stamped_chunks(ros_context, monkeypatch, speech):
    from av_snn_msgs.msg import AudioChunk
    from rclpy.node import Node

    from av_snn_ros.ros.microphone_node import MicrophoneNode
    monkeypatch.setitem(sys.modules, 'sounddevice', _fake_sounddevice(speech, overflow_block=15))
    ns = private_namespace('mic')
    node = MicrophoneNode(context=ros_context, namespace=ns, parameter_overrides=[Parameter('qos.depth', value=100)])
    listener = Node('mic_listener', namespace=ns, context=ros_context)
    got = _Collector()
    listener.create_subscription(AudioChunk, 'audio', got, qos.driver_qos(100))
    n_chunks = len(speech) // 320
    with Spinner(ros_context, node, listener):
        deadline = time.monotonic() + DEFAULT_TIMEOUT_S
        while node.count_subscribers(node._pub.topic_name) < 1:
            assert time.monotonic() < deadline
            threading.Event().wait(0.02)
        node.start()
        got.wait(n_chunks)
        node.stop()
    decoded = [audio_to_array(m) for m in got.msgs]
    assert all(rate == 16000 and len(x) == 320 for _, x, rate in decoded)
    np.testing.assert_allclose(np.concatenate([x for _, x, _ in decoded]), speech[:n_chunks * 320],
                               atol=1.0 / 32768)                         # S16LE quantisation
    stamps = [s for s, _, _ in decoded]
    steps = np.diff(stamps[:15])
    assert (steps == 20_000_000).all()          # exactly 320 samples apart: no jitter for the windower
    assert node.overflows == 1                  # the overflowed block re-anchors on the measured time
    assert abs(stamps[0] - node.get_clock().now().nanoseconds) < 60 * NS
    listener.destroy_node()
    node.destroy_node()


def test_microphone_bad_device_names_the_device_and_lists_inputs(ros_context, monkeypatch):
    from av_snn_ros.ros.microphone_node import MicrophoneNode
    fake = _fake_sounddevice(np.zeros(10, np.float32))
    fake_error = fake.PortAudioError('Error querying device -1')
    monkeypatch.setitem(sys.modules, 'sounddevice', _fake_sounddevice(np.zeros(10, np.float32), fail=fake_error))
    node = MicrophoneNode(context=ros_context, parameter_overrides=[Parameter('device', value='Blue Yeti')])
    with pytest.raises(DeviceError, match="'Blue Yeti'.*Input devices: 'Fake USB Mic'"):
        node.start()
    node.destroy_node()


def test_microphone_without_portaudio_is_one_clear_error():
    try:
        import sounddevice  # noqa: F401
        pytest.skip('PortAudio and sounddevice are available here')
    except (ImportError, OSError):
        pass
    proc = subprocess.run([sys.executable, '-m', 'av_snn_ros.ros.microphone_node'], env=source_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    err = proc.stderr + proc.stdout
    assert 'PortAudio' in err or 'sounddevice' in err
    assert 'Traceback' not in err and err.count('[ERROR]') == 1


def test_demo_without_devices_names_what_is_missing(tmp_path):
    params = tmp_path / 'demo.yaml'
    from pathlib import Path
    params.write_text((Path(REPO, 'config', 'demo.yaml').read_text()
                       .replace("device: ''", "device: 'no such microphone'")
                       .replace("device: '0'", "device: '/nonexistent/camera.avi'")))
    proc = subprocess.run([sys.executable, '-m', 'av_snn_ros.cli', 'run', '--demo', '--params-file', str(params)],
                          env=source_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    err = proc.stderr + proc.stdout
    assert 'needs a microphone and a camera' in err
    assert 'microphone:' in err and "camera: cannot open video file or stream '/nonexistent/camera.avi'" in err
    assert 'Traceback' not in err
