"""The classifier node on real data: labels equal offline evaluation; bad input is counted, not fatal."""
from __future__ import annotations

import numpy as np
import pytest
from rclpy.lifecycle import TransitionCallbackReturn

from av_snn_ros.model_card import ModelCard
from av_snn_ros.models import native_kernels
from av_snn_ros.ros.conversions import stamp_to_ns
from runtime_helpers import Spinner, isolated, make_card, offline_scores, recording, robot_stream

SEGMENTS = 5
POOL = 16          # test samples searched for varied predictions
REPLAY = {'window.hop_s': 1.0, 'qos.sensor.reliability': 'reliable', 'qos.sensor.depth': 2000,
          'inference.queue_size': 100, 'diagnostic_updater.period': 0.2, 'backend.name': 'torch',
          'backend.threads': 1,
          # the test publishes faster than real time and DDS may deliver one stream well ahead of the
          # other: let windows wait long enough for the slower one (flow-controlled replay needs less)
          # (and give a lagging stream as long before the window is classified without it)
          'window.max_buffer_s': 30.0, 'window.modality_timeout_s': 20.0}
#: same model, same input, same backend library: scores agree to float32 rounding
SCORE_ATOL = 1e-5


@pytest.fixture(scope='module')
def card_path(tmp_path_factory):
    return make_card(tmp_path_factory)


@pytest.fixture(scope='module')
def card(card_path):
    return ModelCard.load(card_path)


@pytest.fixture(scope='module')
def rec(card, data_root):
    """SEGMENTS test samples on which the card does not predict one constant class (this matters for
    the untrained fallback card), so a node that published a constant label could not pass."""
    pool = recording(card.preprocessing, data_root, POOL)
    predicted = offline_scores(card, pool).argmax(axis=1)
    first_of_class = {int(k): i for i, k in reversed(list(enumerate(predicted)))}
    chosen = sorted(first_of_class.values())[:SEGMENTS]
    chosen += [i for i in range(POOL) if i not in chosen][:SEGMENTS - len(chosen)]
    assert len(set(predicted[chosen])) > 1, 'the test card predicts one class for every pooled sample'
    return recording(card.preprocessing, data_root, SEGMENTS, indices=chosen)


@pytest.fixture(scope='module')
def scores(card, rec):
    return offline_scores(card, rec)


@pytest.fixture(scope='module')
def expected(scores):
    return [int(k) for k in scores.argmax(axis=1)]


def _by_start(msgs):
    return {stamp_to_ns(m.window_start): m for m in msgs}


@pytest.mark.parametrize('native', [False, True], ids=['torch', 'native_kernels'])
def test_classifications_equal_offline_evaluation(ros_context, card, card_path, rec, scores, expected, native):
    if native and not native_kernels.available()[0]:
        pytest.skip(f'native kernels unavailable: {native_kernels.available()[1]}')
    node, probe = isolated(ros_context, card_path,
                           {**REPLAY, 'energy.enabled': True, 'backend.native_kernels': native})
    with Spinner(ros_context, node, probe.node):
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        probe.wait_for_subscribers()
        probe.publish_events(robot_stream(rec, card.preprocessing, fps=20))
        probe.wait_for(lambda p: len(p.classifications) >= SEGMENTS, what=f'{SEGMENTS} classifications')
        probe.wait_for(lambda p: p.diagnostics and p.diagnostics[-1].get('windows_classified') == str(SEGMENTS),
                       what='diagnostics counting every window')
    msgs = _by_start(probe.classifications)
    assert sorted(msgs) == [rec.segment_start(i) for i in range(SEGMENTS)]
    for i in range(SEGMENTS):
        m = msgs[rec.segment_start(i)]
        assert m.class_id == expected[i], f'segment {i}: node {m.class_id}, offline {expected[i]}'
        assert m.label == card.labels[m.class_id]
        assert stamp_to_ns(m.header.stamp) == rec.segment_start(i) + rec.window_ns    # window end, sensor time
        assert m.header.frame_id == 'camera'
        assert list(m.labels) == card.labels
        got = np.asarray(m.scores)
        np.testing.assert_allclose(got, scores[i], atol=SCORE_ATOL)     # the very same computation
        assert abs(got.sum() - 1) < 1e-5
        assert m.confidence == pytest.approx(got.max()) and got.argmax() == m.class_id
        assert m.model_name == f'{card.model}/{card.name}'
        # the only flag a clean window may carry: both heads confident on different classes (contract 5)
        heads_disagree = (m.audio_class_id != m.visual_class_id and min(m.audio_confidence, m.visual_confidence)
                          >= card.conflict_threshold and 'visual' in card.modality_heads)
        assert list(m.flags) == (['conflict'] if heads_disagree else [])
        for head in ('audio', 'visual'):
            k, p = getattr(m, f'{head}_class_id'), getattr(m, f'{head}_confidence')
            if head in card.modality_heads:
                assert 0 <= k < len(card.labels) and 0 < p <= 1
            else:
                assert (k, p) == (-1, 0.0)
    diag = probe.latest_diagnostics()
    assert diag['windows_formed'] == str(SEGMENTS)
    assert diag['windows_dropped'] == '0'
    assert diag['messages_dropped'] == '0'
    assert diag['backend'] == 'torch'
    assert diag['backend.native_kernels'].startswith('on (' if native else 'off')
    assert 'latency.inference_p50_s' in diag and 'latency.inference_p99_s' in diag
    # the rate is over the last 5 s: on a loaded machine the latest report may come after the audio ended
    with probe.cond:
        assert max(float(d.get('rate.audio_hz', 0)) for d in probe.diagnostics) > 0
    # energy per window from the model zoo's meter (torch backend)
    assert float(diag['energy.energy_mj']) > 0 and 0 < float(diag['energy.firing_rate']) < 1


def _bad_images(stamp):
    from sensor_msgs.msg import Image
    from av_snn_ros.ros.conversions import ns_to_stamp
    good = dict(height=28, width=28, encoding='rgb8', step=84, data=bytes(28 * 84))
    cases = {
        'image_encoding': dict(good, encoding='yuv422_yuy2', step=56, data=bytes(28 * 56)),
        'image_step': dict(good, step=28),
        'image_truncated': dict(good, data=bytes(28 * 84 - 100)),
        'image_size': dict(good, height=0, data=b''),
    }
    out = {}
    for reason, fields in cases.items():
        msg = Image(**fields)
        msg.header.stamp = ns_to_stamp(stamp)
        out[reason] = msg
    return out


def _bad_audio(stamp):
    from av_snn_ros.ros.conversions import array_to_audio
    odd = array_to_audio(np.zeros(320, np.float32), stamp, 16000, 'S16LE')
    odd.data = bytes(641)
    nan = array_to_audio(np.full(320, np.nan, np.float32), stamp, 16000, 'F32LE')
    no_rate = array_to_audio(np.zeros(320, np.float32), stamp, 16000, 'S16LE')
    no_rate.sample_rate = 0
    bad_enc = array_to_audio(np.zeros(320, np.float32), stamp, 16000, 'S16LE')
    bad_enc.encoding = 'MP3'
    return {'audio_size': odd, 'audio_nonfinite': nan, 'audio_rate': no_rate, 'audio_encoding': bad_enc}


def test_bad_messages_are_dropped_counted_and_node_keeps_working(ros_context, card, card_path, rec, expected):
    node, probe = isolated(ros_context, card_path, REPLAY)
    events = robot_stream(rec, card.preprocessing, fps=20)
    mid = len(events) // 2
    bad_stamp = events[mid][0]
    with Spinner(ros_context, node, probe.node):
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        probe.wait_for_subscribers()
        probe.publish_events(events[:mid])
        for msg in _bad_images(bad_stamp).values():
            probe.image_pub.publish(msg)
        for msg in _bad_audio(bad_stamp).values():
            probe.audio_pub.publish(msg)
        probe.publish_events(events[mid:])           # valid data after the bad messages
        probe.wait_for(lambda p: len(p.classifications) >= SEGMENTS, what='classifications after bad input')
        reasons = [*_bad_images(0), *_bad_audio(0)]
        probe.wait_for(lambda p: p.diagnostics and all(
            p.diagnostics[-1].get(f'drop.{r}') == '1' for r in reasons), what='drop counters in diagnostics')
    msgs = _by_start(probe.classifications)
    assert [msgs[rec.segment_start(i)].class_id for i in range(SEGMENTS)] == expected
    diag = probe.latest_diagnostics()
    assert diag['messages_dropped'] == str(len(reasons))
    assert diag['windows_dropped'] == '0'


def test_compressed_input_and_other_encodings(ros_context, card, card_path, rec, expected):
    """CompressedImage (PNG: lossless) input gives the offline labels too; bgr8 frames decode to RGB."""
    import cv2
    from sensor_msgs.msg import CompressedImage
    from av_snn_ros.ros.conversions import array_to_audio, ns_to_stamp
    node, probe = isolated(ros_context, card_path, {**REPLAY, 'input.compressed': True})
    with Spinner(ros_context, node, probe.node):
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        probe.wait_for_subscribers(compressed=True)
        for stamp, kind, payload in robot_stream(rec, card.preprocessing, fps=20):
            if kind == 'audio':
                probe.audio_pub.publish(array_to_audio(payload, stamp, 16000, 'F32LE'))
            else:
                ok, png = cv2.imencode('.png', payload)
                assert ok
                msg = CompressedImage(format='png', data=png.tobytes())
                msg.header.stamp = ns_to_stamp(stamp)
                probe.compressed_pub.publish(msg)
        probe.wait_for(lambda p: len(p.classifications) >= SEGMENTS, what='classifications')
    msgs = _by_start(probe.classifications)
    assert [msgs[rec.segment_start(i)].class_id for i in range(SEGMENTS)] == expected


# ------------------------------------------------------------------ building blocks of the node (no ROS)

def test_inference_worker_newest_wins_and_counts_drops():
    import threading

    from av_snn_ros.inference_worker import InferenceWorker
    started, release = threading.Event(), threading.Event()
    results = []

    def process(item):
        if item == 1:
            started.set()
            assert release.wait(30)
        return item * 10

    worker = InferenceWorker(process, lambda item, result: results.append(result))
    worker.start()
    worker.submit(1)
    assert started.wait(30)                   # item 1 is being processed
    assert worker.submit(2) is True
    assert worker.submit(3) is False          # replaces 2 before the worker got to it
    assert worker.submit(4) is False          # replaces 3
    release.set()
    assert worker.wait_idle(30)
    worker.stop()
    assert results == [10, 40]
    counts = worker.counters.snapshot()
    assert counts['dropped_busy'] == 2 and counts['processed'] == 2 and counts['submitted'] == 4
    assert worker.queue_wait.count == 2                        # one wait per processed item
    assert worker.queue_wait.percentiles()['p99'] > 0          # item 4 waited while 1 was held


def test_inference_worker_queue_and_errors():
    import threading

    from av_snn_ros.inference_worker import InferenceWorker, Mailbox
    box = Mailbox(capacity=3)
    assert [box.put(i) for i in range(5)] == [None, None, None, 0, 1]     # oldest dropped when full
    assert [box.get(0) for _ in range(3)] == [2, 3, 4]
    assert box.get(timeout=0.01) is None
    errors, results = [], []
    gate = threading.Event()

    def process(item):
        gate.wait(30)
        if item == 'bad':
            raise ValueError('broken window')
        return item

    worker = InferenceWorker(process, lambda i, r: results.append(r), lambda i, e: errors.append((i, str(e))),
                             capacity=4)
    worker.start()
    for item in ('a', 'bad', 'b'):
        worker.submit(item)
    gate.set()
    assert worker.wait_idle(30)
    assert worker.stop() == 0
    assert results == ['a', 'b'] and errors == [('bad', 'broken window')]
    assert worker.counters.get('errors') == 1 and worker.counters.get('dropped_busy') == 0
    with pytest.raises(RuntimeError):
        worker.submit('late')                 # closed after stop


def test_runtime_stats_rates_percentiles_and_throttling():
    from av_snn_ros.runtime_stats import LatencyTracker, RateMeter, ThrottledWarnings
    now = [100.0]
    clock = lambda: now[0]  # noqa: E731
    meter = RateMeter(window_s=2.0, clock=clock)
    for _ in range(10):
        now[0] += 0.1
        meter.tick()
    assert meter.rate_hz() == pytest.approx(10 / 1.0)        # 10 ticks over the 1 s seen so far
    now[0] += 5.0
    assert meter.rate_hz() == 0.0
    lat = LatencyTracker(maxlen=100)
    assert lat.percentiles() == {}
    for v in range(1, 201):
        lat.add(v / 1000)                                     # keeps the last 100: 0.101 .. 0.200
    p = lat.percentiles()
    assert p['p50'] == pytest.approx(0.1505) and p['p99'] == pytest.approx(0.19901)
    warn = ThrottledWarnings(period_s=10.0, clock=clock)
    assert warn.check('image_encoding') == 1                  # first occurrence: log
    assert warn.check('image_encoding') is None               # then quiet within the period
    assert warn.check('audio_rate') == 1                      # reasons are independent
    now[0] += 11.0
    assert warn.check('image_encoding') == 2                  # one line covering both occurrences


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'mono16_le', 'mono16_be'])
def test_image_conversion_honours_encoding_step_and_endianness(encoding):
    from sensor_msgs.msg import Image

    from av_snn_ros.ros.conversions import image_to_array, ns_to_stamp
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    gray = rgb[:, :, 0]
    pad = 3                                            # bytes of row padding (step > width * bpp)
    if encoding.startswith('mono16'):
        big = encoding.endswith('be')
        wide = gray.astype(np.uint16) * 256 + 17      # high byte = the gray value
        pixels = wide.astype('>u2' if big else '<u2').view(np.uint8).reshape(5, 14)
        name, expected = 'mono16', gray
    else:
        name, big = encoding, False
        order = {'rgb8': [0, 1, 2], 'bgr8': [2, 1, 0], 'rgba8': [0, 1, 2, 0], 'bgra8': [2, 1, 0, 0]}
        pixels = gray if encoding == 'mono8' else rgb[:, :, order[encoding]].reshape(5, -1)
        expected = gray if encoding == 'mono8' else rgb
    rows = np.zeros((5, pixels.shape[1] + pad), np.uint8)
    rows[:, :pixels.shape[1]] = pixels
    msg = Image(height=5, width=7, encoding=name, is_bigendian=int(big), step=rows.shape[1], data=rows.tobytes())
    msg.header.stamp = ns_to_stamp(1_234_567_890_123)
    stamp, frame = image_to_array(msg)
    assert stamp == 1_234_567_890_123
    np.testing.assert_array_equal(frame, expected)
    assert frame.flags.c_contiguous and frame.dtype == np.uint8


def test_audio_conversion_mixes_channels_and_round_trips():
    from av_snn_ros.ros.conversions import MessageError, array_to_audio, audio_to_array
    rng = np.random.default_rng(2)
    stereo = rng.uniform(-0.5, 0.5, (160, 2)).astype(np.float32)
    msg = array_to_audio(stereo, 42, 48000, 'F32LE', channels=2)
    stamp, mono, rate = audio_to_array(msg)
    assert (stamp, rate) == (42, 48000)
    np.testing.assert_allclose(mono, stereo.mean(axis=1), atol=1e-7)
    msg = array_to_audio(stereo[:, 0], 42, 16000, 'S16LE')
    np.testing.assert_allclose(audio_to_array(msg)[1], stereo[:, 0], atol=1 / 32768)
    msg.channels = 0
    with pytest.raises(MessageError) as err:
        audio_to_array(msg)
    assert err.value.reason == 'audio_channels'


def test_inference_error_is_counted_reported_and_not_fatal(ros_context, card, card_path, rec, expected):
    node, probe = isolated(ros_context, card_path, REPLAY)
    with Spinner(ros_context, node, probe.node):
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        real = node._predictor
        calls = []

        def flaky(window):                     # the backend fails on the second window only
            calls.append(window.start_ns)
            if len(calls) == 2:
                raise RuntimeError('CUDA error: an illegal memory access was encountered')
            return real(window)

        node._predictor = flaky
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        probe.wait_for_subscribers()
        probe.publish_events(robot_stream(rec, card.preprocessing, fps=20))
        probe.wait_for(lambda p: len(p.classifications) >= SEGMENTS - 1, what='the other windows')
        probe.wait_for(lambda p: any(d['_level'] == b'\x02' for d in p.diagnostics), what='an ERROR report')
        probe.wait_for(lambda p: p.diagnostics[-1].get('drop.inference_error') == '1', what='the error counted')
    published = {stamp_to_ns(m.window_start) for m in probe.classifications}
    assert published == {rec.segment_start(i) for i in range(SEGMENTS)} - {calls[1]}
    error_report = next(d for d in probe.diagnostics if d['_level'] == b'\x02')
    assert 'inference failed for 1 window' in error_report['_message']
    assert probe.latest_diagnostics()['windows_dropped'] == '1'
