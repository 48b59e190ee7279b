"""Standard ROS message types beside the package's own: vision_msgs and hri_msgs outputs, audio_common input.

The message packages are the real ones (vision_msgs 4.x, hri_msgs 2.0, audio_common_msgs 0.3), built
into this venv by ../shared/ros2-tooling (tests/ros_tooling.py); on a robot they come from ROS.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from rclpy.lifecycle import TransitionCallbackReturn

from av_snn_ros.prediction import Prediction
from av_snn_ros.ros import standard_outputs
from av_snn_ros.ros.conversions import MessageError, audio_to_array, stamp_to_ns
from ros_tooling import ros2_tooling  # noqa: F401
from runtime_helpers import Spinner, classifier, make_card, private_namespace, recording, robot_stream

TIMEOUT_S = 60.0
#: RAVDESS' eight classes as issue 17 names them
RAVDESS_LABELS = ['neutral', 'calm', 'happy', 'sad', 'angry', 'fearful', 'disgusted', 'surprised']


@pytest.fixture(scope='module', autouse=True)
def message_packages(ros2_tooling):
    import importlib
    importlib.invalidate_caches()


def _prediction(labels, scores, end_ns=12_500_000_000):
    scores = np.asarray(scores, dtype=np.float32)
    k = int(scores.argmax())
    return Prediction(start_ns=end_ns - 10**9, end_ns=end_ns, class_id=k, label=labels[k],
                      confidence=float(scores[k]), scores=scores, labels=labels, model_name='m/test')


def test_vision_classification_and_label_info():
    labels = [str(d) for d in range(4)]
    msg = standard_outputs.vision_classification(_prediction(labels, [0.1, 0.6, 0.05, 0.25]), 'camera')
    assert stamp_to_ns(msg.header.stamp) == 12_500_000_000 and msg.header.frame_id == 'camera'
    assert [(h.class_id, round(h.score, 6)) for h in msg.results] == [('1', 0.6), ('3', 0.25), ('0', 0.1),
                                                                      ('2', 0.05)]
    info = standard_outputs.label_info(labels)
    assert [(c.class_id, c.class_name) for c in info.class_map] == list(enumerate(labels))


def test_rep155_expression_mapping_uses_hri_msgs_constants():
    from hri_msgs.msg import Expression
    expressions = standard_outputs.expression_of_labels(RAVDESS_LABELS)
    assert expressions == [Expression.NEUTRAL, Expression.NEUTRAL, Expression.HAPPY, Expression.SAD,
                           Expression.ANGRY, Expression.SCARED, Expression.DISGUSTED, Expression.SURPRISED]
    constants = {getattr(Expression, n) for n in dir(Expression) if n.isupper() and isinstance(getattr(Expression, n), str)}
    assert set(standard_outputs.EXPRESSIONS.values()) <= constants
    # calm and neutral are one REP-155 expression: their probabilities add up
    msg = standard_outputs.expression(_prediction(RAVDESS_LABELS, [0.2, 0.25, 0.3, 0.05, 0.05, 0.05, 0.05, 0.05]),
                                      expressions, 'mic')
    assert msg.expression == Expression.NEUTRAL and msg.confidence == pytest.approx(0.45)
    msg = standard_outputs.expression(_prediction(RAVDESS_LABELS, [0, 0, 0, 0, 0, 0.9, 0.1, 0]), expressions)
    assert msg.expression == 'scared' and msg.confidence == pytest.approx(0.9)
    with pytest.raises(ValueError, match=r"\['0', '1'\]"):
        standard_outputs.expression_of_labels(['0', '1'])


@pytest.fixture(scope='module')
def card_path(tmp_path_factory):
    return make_card(tmp_path_factory)


def test_node_publishes_vision_msgs_beside_its_own(ros_context, card_path, data_root):
    """On real windows the vision_msgs output carries the same result as av_snn_msgs/Classification, and
    label_info (transient local) reaches a subscriber that joins after configure."""
    import rclpy
    from vision_msgs.msg import Classification as VisionClassification, LabelInfo

    from av_snn_msgs.msg import Classification
    from av_snn_ros.model_card import ModelCard
    from av_snn_ros.ros import qos
    card = ModelCard.load(card_path)
    ns = private_namespace('vision')
    node = classifier(ros_context, card_path, {'output.vision_msgs': True, 'backend.name': 'onnxruntime',
                                               'window.hop_s': 1.0, 'qos.sensor.reliability': 'reliable',
                                               'qos.sensor.depth': 2000, 'inference.queue_size': 100,
                                               'window.max_buffer_s': 30.0}, namespace=ns)
    probe = rclpy.create_node('vision_probe', namespace=ns, context=ros_context)
    got = {'own': [], 'vision': [], 'info': []}
    cond = threading.Condition()

    def keep(kind):
        def callback(msg):
            with cond:
                got[kind].append(msg)
                cond.notify_all()
        return callback

    from sensor_msgs.msg import Image

    from av_snn_msgs.msg import AudioChunk
    from av_snn_ros.ros.conversions import array_to_audio, array_to_image
    image_pub = probe.create_publisher(Image, 'image', qos.driver_qos(1000))
    audio_pub = probe.create_publisher(AudioChunk, 'audio', qos.driver_qos(1000))
    probe.create_subscription(Classification, 'classification', keep('own'), qos.output_qos())
    probe.create_subscription(VisionClassification, 'vision_classification', keep('vision'), qos.output_qos())
    rec = recording(card.preprocessing, data_root, 2)
    with Spinner(ros_context, node, probe):
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        # joins after label_info was sent: transient local must still deliver it
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        probe.create_subscription(LabelInfo, 'label_info', keep('info'), QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        deadline = time.monotonic() + TIMEOUT_S
        while (image_pub.get_subscription_count() < 1 or audio_pub.get_subscription_count() < 1) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        for stamp, kind, payload in robot_stream(rec, card.preprocessing, fps=20):
            if kind == 'audio':
                audio_pub.publish(array_to_audio(payload, stamp, card.preprocessing.sample_rate, 'F32LE'))
            else:
                image_pub.publish(array_to_image(payload, stamp, 'rgb8', frame_id='camera'))
        with cond:
            assert cond.wait_for(lambda: len(got['vision']) >= 2 and len(got['own']) >= 2 and got['info'],
                                 timeout=TIMEOUT_S), {k: len(v) for k, v in got.items()}
        node.trigger_deactivate()
    own = {stamp_to_ns(m.header.stamp): m for m in got['own']}
    for vis in got['vision']:
        mine = own[stamp_to_ns(vis.header.stamp)]
        assert vis.header.frame_id == mine.header.frame_id == 'camera'
        assert vis.results[0].class_id == str(mine.class_id)
        assert vis.results[0].score == pytest.approx(mine.confidence, abs=1e-6)
        assert sorted(int(h.class_id) for h in vis.results) == list(range(len(card.labels)))
    (info,) = got['info'][:1]
    assert [c.class_name for c in info.class_map] == list(card.labels)
    probe.destroy_node()
    node.destroy_node()


def test_expression_output_refuses_a_model_without_emotion_labels(ros_context, card_path):
    node = classifier(ros_context, card_path, {'output.hri_expression': True, 'backend.name': 'onnxruntime'},
                      namespace=private_namespace('expr'))
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE    # digits are not emotions
    node.destroy_node()


# ----------------------------------------------------------------------------------------- audio_common

def _audio_common(samples: np.ndarray, rate: int, stamp_ns: int, sample_format='S16LE', coding='wave'):
    from audio_common_msgs.msg import AudioDataStamped, AudioInfo
    from av_snn_ros.ros.conversions import ns_to_stamp
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    if sample_format == 'S16LE':
        data = np.clip(np.rint(samples * 32768.0), -32768, 32767).astype('<i2').tobytes()
    else:
        data = samples.astype('<f4').tobytes()
    stamped = AudioDataStamped()
    stamped.header.stamp = ns_to_stamp(stamp_ns)
    stamped.header.frame_id = 'mic'
    stamped.audio.data = data
    info = AudioInfo(channels=channels, sample_rate=rate, sample_format=sample_format,
                     bitrate=rate * channels * 16, coding_format=coding)
    return stamped, info


@pytest.fixture(scope='module')
def speech(data_root) -> tuple[np.ndarray, int]:
    from scipy.io import wavfile
    rate, pcm = wavfile.read(data_root / 'fsdd' / 'recordings' / '3_george_0.wav')
    assert pcm.dtype == np.int16
    return pcm.astype(np.float32) / 32768.0, rate


@pytest.mark.parametrize('sample_format', ['S16LE', 'F32LE'])
def test_audio_common_chunk_decodes_to_the_recording(speech, sample_format):
    from av_snn_ros.ros.audio_common_adapter import to_audio_chunk
    pcm, rate = speech
    stereo = np.stack([pcm, -pcm], axis=1)               # interleaving must survive: mono = mean = 0
    for samples, expected in ((pcm, pcm), (stereo, np.zeros_like(pcm))):
        stamped, info = _audio_common(samples, rate, 7_250_000_000, sample_format)
        chunk = to_audio_chunk(stamped, info)
        assert (chunk.sample_rate, chunk.channels, chunk.encoding) == (rate, samples.ndim, sample_format)
        assert chunk.header.frame_id == 'mic'
        stamp, mono, got_rate = audio_to_array(chunk)
        assert (stamp, got_rate) == (7_250_000_000, rate)
        np.testing.assert_allclose(mono, expected, atol=1 / 32768 + 1e-7)


def test_audio_common_refuses_streams_it_cannot_read(speech):
    from av_snn_ros.ros.audio_common_adapter import to_audio_chunk
    pcm, rate = speech
    with pytest.raises(MessageError, match='format parameter to wave') as err:
        to_audio_chunk(*_audio_common(pcm, rate, 0, coding='mp3'))
    assert err.value.reason == 'audio_coding'
    stamped, info = _audio_common(pcm, rate, 0)
    info.sample_format = 'S24LE'
    with pytest.raises(MessageError) as err:
        to_audio_chunk(stamped, info)
    assert err.value.reason == 'audio_encoding'


def test_audio_common_adapter_node_republishes_chunks(ros_context, speech):
    import rclpy
    from audio_common_msgs.msg import AudioDataStamped, AudioInfo

    from av_snn_msgs.msg import AudioChunk
    from av_snn_ros.ros import qos
    from av_snn_ros.ros.audio_common_adapter import AudioCommonAdapter
    pcm, rate = speech
    ns = private_namespace('adapter')
    adapter = AudioCommonAdapter(context=ros_context, namespace=ns)
    probe = rclpy.create_node('adapter_probe', namespace=ns, context=ros_context)
    info_pub = probe.create_publisher(AudioInfo, 'audio_info', 1)
    audio_pub = probe.create_publisher(AudioDataStamped, 'audio_stamped', qos.driver_qos())
    received, cond = [], threading.Condition()

    def on_chunk(msg):
        with cond:
            received.append(msg)
            cond.notify_all()

    probe.create_subscription(AudioChunk, 'audio', on_chunk, qos.driver_qos())
    chunk = rate // 50                                       # 20 ms, as audio_capture sends
    with Spinner(ros_context, adapter, probe):
        deadline = time.monotonic() + TIMEOUT_S
        while (audio_pub.get_subscription_count() < 1 or info_pub.get_subscription_count() < 1) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        stamped, info = _audio_common(pcm[:chunk], rate, 1_000_000_000)
        audio_pub.publish(stamped)                           # before any AudioInfo: dropped, counted
        while adapter.dropped.get('no_audio_info', 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        info_pub.publish(info)
        while adapter.info is None and time.monotonic() < deadline:
            time.sleep(0.05)
        for i in range(3):
            stamped, _ = _audio_common(pcm[i * chunk:(i + 1) * chunk], rate, 1_000_000_000 + i * 20_000_000)
            audio_pub.publish(stamped)
        with cond:
            assert cond.wait_for(lambda: len(received) >= 3, timeout=TIMEOUT_S), len(received)
    assert adapter.dropped == {'no_audio_info': 1} and adapter.converted == 3
    decoded = [audio_to_array(m) for m in received[:3]]
    assert [d[0] for d in decoded] == [1_000_000_000 + i * 20_000_000 for i in range(3)]
    np.testing.assert_allclose(np.concatenate([d[1] for d in decoded]), pcm[:3 * chunk], atol=1 / 32768 + 1e-7)
    probe.destroy_node()
    adapter.destroy_node()
