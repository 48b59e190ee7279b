"""Fuzz the running classifier node with >= 10,000 malformed and hostile messages over real rclpy pub/sub.

Every message the node receives must be accounted for, exactly: a malformed one as a counted drop
(``drop.<reason>`` in /diagnostics; their sum is ``messages_dropped``), a well-formed one (random pixels,
absurd or reversed stamps) as accepted input (``input.frames`` / ``input.audio_chunks``). Transport is
reliable with histories deeper than the burst, so "sent" equals "received" and the books must balance.
Afterwards the node is still alive and classifies valid data exactly like offline evaluation.
The node and its probe live in a private namespace; the books are read from the node's diagnostics.
"""
from __future__ import annotations

import string
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
from rclpy.lifecycle import TransitionCallbackReturn

from av_snn_ros.model_card import ModelCard
from av_snn_ros.ros.conversions import MAX_AUDIO_CHANNELS, MAX_IMAGE_SIDE, MIN_SAMPLE_RATE, stamp_to_ns
from av_snn_ros.windowing import MAX_SAMPLE_RATE
from runtime_helpers import Probe, Spinner, make_card, offline_scores, recording, robot_stream

SEED = 20240917
FUZZ_MESSAGES = 10_000
VALID_SEGMENTS = 3
#: deeper than everything the test sends: reliable transport then loses nothing
DEPTH = 3 * FUZZ_MESSAGES
NODE_PARAMS = {'window.hop_s': 1.0, 'qos.sensor.reliability': 'reliable', 'qos.sensor.depth': DEPTH,
               'inference.queue_size': 100, 'diagnostic_updater.period': 0.2, 'backend.name': 'torch',
               'backend.threads': 1, 'window.max_buffer_s': 30.0,
               'window.modality_timeout_s': 20.0}
#: valid data lives at [VALID_T0_S, VALID_T0_S + VALID_SEGMENTS); hostile stamps stay far from it
VALID_T0_S = 5000
HOSTILE_STAMP_MARGIN_S = 1000
INT32_MAX = 2 ** 31 - 1
UINT32_MAX = 2 ** 32 - 1
TIMEOUT_S = 120.0
#: how often the in-process diagnostics are polled while waiting
POLL_S = 0.05
#: the books have settled when they reach the expected total or stay unchanged this long
STABLE_S = 5.0


def isolated_classifier(context, card_path, params: dict):
    """The classifier in a namespace of its own, with a probe in the same namespace.

    Tests of other checkouts may share this machine and, by chance, the ROS domain: a private namespace
    keeps their image/audio/classification traffic out of this test. Diagnostics are read in-process
    (``diagnostics_values()`` is exactly what the node publishes on /diagnostics).
    """
    from rclpy.parameter import Parameter

    from av_snn_ros.ros.classifier_node import AvClassifierNode
    namespace = f'/fuzz_{uuid.uuid4().hex[:8]}'
    values = {'model.card': str(card_path), **params}
    node = AvClassifierNode(context=context, namespace=namespace,
                            parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    return node, Probe(context, namespace=namespace, depth=DEPTH)


def wait_for_books(node, expected_total: int, timeout: float = TIMEOUT_S) -> dict[str, str]:
    """Poll the node's diagnostics until the books reach ``expected_total`` or stop moving."""
    deadline = time.monotonic() + timeout
    last_total, last_change = None, time.monotonic()
    pause = threading.Event()
    while True:
        diag = node.diagnostics_values()
        total = sum(_books(diag)[:2])
        now = time.monotonic()
        if total != last_total:
            last_total, last_change = total, now
        if total >= expected_total or now - last_change >= STABLE_S:
            return diag
        if now > deadline:
            raise AssertionError(f'timed out after {timeout} s: the node accounted for {total} of '
                                 f'{expected_total} messages')
        pause.wait(POLL_S)


@dataclass
class FuzzMessage:
    topic: str           # 'image' or 'audio'
    msg: object
    drop_reason: str | None     # the drop counter it must land in; None = well-formed (accepted)


def _hostile_stamp(rng: np.random.Generator):
    """Absurd, reversed, non-normalised or negative stamps, never near the valid data's time."""
    from builtin_interfaces.msg import Time
    kind = rng.integers(6)
    if kind == 0:
        return Time(sec=0, nanosec=0)
    if kind == 1:
        return Time(sec=INT32_MAX, nanosec=999_999_999)                  # year 2038
    if kind == 2:
        return Time(sec=-int(rng.integers(1, INT32_MAX)), nanosec=int(rng.integers(0, 10 ** 9)))
    if kind == 3:
        return Time(sec=int(rng.integers(0, 100)), nanosec=UINT32_MAX)   # nanosec > 1 s: not normalised
    if kind == 4:   # random far past / far future of the valid span
        sec = int(rng.choice([rng.integers(0, VALID_T0_S - HOSTILE_STAMP_MARGIN_S),
                              rng.integers(VALID_T0_S + HOSTILE_STAMP_MARGIN_S, INT32_MAX)]))
        return Time(sec=sec, nanosec=int(rng.integers(0, 10 ** 9)))
    return Time(sec=int(rng.integers(10, 20)), nanosec=int(rng.integers(0, 10 ** 9)))   # a reversed clock


def _garbage_string(rng: np.random.Generator) -> str:
    alphabet = string.printable + 'äöü中文字🙂\u200b'
    n = int(rng.integers(0, 40))
    return ''.join(rng.choice(list(alphabet), size=n))


def _image(rng: np.random.Generator, case: str) -> FuzzMessage:
    from sensor_msgs.msg import Image
    h, w = int(rng.integers(1, 48)), int(rng.integers(1, 48))
    enc, ch = [('rgb8', 3), ('bgr8', 3), ('mono8', 1), ('rgba8', 4), ('mono16', 2)][int(rng.integers(5))]
    step = w * ch + int(rng.integers(0, 4))                  # row padding is legal
    fields = dict(height=h, width=w, encoding=enc, step=step, is_bigendian=int(rng.integers(2)))
    data = rng.integers(0, 256, size=h * step, dtype=np.uint8).tobytes()
    reason = None
    if case == 'encoding':
        fields['encoding'] = _garbage_string(rng)
        if fields['encoding'].lower() in ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', '8uc1', 'mono16'):
            fields['encoding'] = 'yuv422'
        reason = 'image_encoding'
    elif case == 'step':
        fields['step'] = int(rng.integers(0, w * ch))
        reason = 'image_step'
    elif case == 'truncated':
        data = data[:int(rng.integers(0, len(data)))]
        reason = 'image_truncated'
    elif case == 'oversized':
        data = data + bytes(int(rng.integers(1, 64)))
        reason = 'image_size'
    elif case == 'dims':
        fields['height'], fields['width'] = [(0, w), (h, 0), (MAX_IMAGE_SIDE + 1, w), (UINT32_MAX, UINT32_MAX)][
            int(rng.integers(4))]
        reason = 'image_size'
    elif case == 'huge_declared':      # a header claiming gigabytes with a few bytes of data
        fields.update(height=MAX_IMAGE_SIDE, width=MAX_IMAGE_SIDE, encoding='rgb8', step=3 * MAX_IMAGE_SIDE)
        reason = 'image_size'          # above input.max_image_pixels: refused before looking at the data
    elif case == 'large_truncated':    # an allowed size (1080p) with a few bytes of data
        fields.update(height=1080, width=1920, encoding='rgb8', step=3 * 1920)
        reason = 'image_truncated'
    elif case == 'random_pixels':      # well-formed: garbage content is not an error
        fields['encoding'], ch = 'mono8', 1
        fields['step'] = w
        data = rng.integers(0, 256, size=h * w, dtype=np.uint8).tobytes()
    msg = Image(**fields)
    msg.data = data
    msg.header.stamp = _hostile_stamp(rng)
    msg.header.frame_id = _garbage_string(rng)
    return FuzzMessage('image', msg, reason)


def _audio(rng: np.random.Generator, case: str) -> FuzzMessage:
    from av_snn_msgs.msg import AudioChunk
    n = int(rng.integers(1, 400))
    channels = int(rng.integers(1, 3))
    enc = ['S16LE', 'F32LE'][int(rng.integers(2))]
    width = 2 if enc == 'S16LE' else 4
    if enc == 'S16LE':
        data = rng.integers(-32768, 32768, size=n * channels).astype('<i2').tobytes()
    else:
        data = rng.uniform(-1, 1, size=n * channels).astype('<f4').tobytes()
    fields = dict(sample_rate=int(rng.choice([8000, 16000, 44100, 48000])), channels=channels, encoding=enc)
    reason = None
    if case == 'odd_bytes':
        data = data + bytes(int(rng.integers(1, width * channels)))
        reason = 'audio_size'
    elif case == 'nonfinite':
        samples = rng.uniform(-1, 1, size=n * channels).astype('<f4')
        samples[rng.integers(0, samples.size, size=int(rng.integers(1, 4)))] = rng.choice([np.nan, np.inf, -np.inf])
        fields['encoding'], data = 'F32LE', samples.tobytes()
        reason = 'audio_nonfinite'
    elif case == 'rate':
        fields['sample_rate'] = int(rng.choice([0, 1, MIN_SAMPLE_RATE - 1, MAX_SAMPLE_RATE + 1, UINT32_MAX]))
        reason = 'audio_rate'
    elif case == 'channels':
        fields['channels'] = int(rng.choice([0, MAX_AUDIO_CHANNELS + 1, 255]))
        reason = 'audio_channels'
    elif case == 'encoding':
        fields['encoding'] = _garbage_string(rng)
        if fields['encoding'].upper() in ('S16LE', 'PCM_S16LE', 'S16', 'F32LE', 'PCM_F32LE', 'F32'):
            fields['encoding'] = 'MP3'
        reason = 'audio_encoding'
    elif case == 'empty':              # a chunk with no samples carries nothing usable: a counted drop
        data = b''
        reason = 'audio_empty'
    msg = AudioChunk(**fields)
    msg.data = data
    msg.header.stamp = _hostile_stamp(rng)
    msg.header.frame_id = _garbage_string(rng)
    return FuzzMessage('audio', msg, reason)


IMAGE_CASES = ('encoding', 'step', 'truncated', 'oversized', 'dims', 'huge_declared', 'large_truncated',
               'random_pixels')
AUDIO_CASES = ('odd_bytes', 'nonfinite', 'rate', 'channels', 'encoding', 'empty', 'well_formed')


def fuzz_messages(seed: int, n: int, image_cases: tuple[str, ...] = IMAGE_CASES,
                  audio_cases: tuple[str, ...] = AUDIO_CASES) -> list[FuzzMessage]:
    """``n`` seeded hostile messages, image and audio in equal shares (none when a case list is empty)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        if (i % 2 and image_cases) or not audio_cases:
            out.append(_image(rng, image_cases[int(rng.integers(len(image_cases)))]))
        else:
            out.append(_audio(rng, audio_cases[int(rng.integers(len(audio_cases)))]))
    return out


def test_fuzz_cases_are_what_the_conversions_say() -> None:
    """The fuzzer's own bookkeeping: each case's expected reason is the one the decoder raises."""
    from av_snn_ros.ros.conversions import MessageError, audio_to_array, image_to_array
    seen = Counter()
    for m in fuzz_messages(SEED, 2000):
        decode = image_to_array if m.topic == 'image' else audio_to_array
        try:
            decode(m.msg)
        except MessageError as exc:
            got = exc.reason
        else:
            got = None
        assert got == m.drop_reason, f'{m.topic} {m.msg}: expected {m.drop_reason}, decoder says {got}'
        seen[got] += 1
    assert len(seen) == 1 + 4 + 6        # every reason occurs (None = well-formed)


@pytest.fixture(scope='module')
def card_path(tmp_path_factory):
    return make_card(tmp_path_factory)


def _books(diag: dict[str, str]) -> tuple[int, int, dict[str, int]]:
    drops = {k[len('drop.'):]: int(v) for k, v in diag.items() if k.startswith('drop.')}
    accepted = int(diag.get('input.frames', 0)) + int(diag.get('input.audio_chunks', 0))
    return int(diag.get('messages_dropped', -1)), accepted, drops


def _check_books(diag: dict[str, str], messages: list[FuzzMessage], valid_count: int) -> None:
    """Exact accounting: every invalid message under its drop reason, every other one as input."""
    expected_drops = Counter(m.drop_reason for m in messages if m.drop_reason is not None)
    hostile_accepted = sum(1 for m in messages if m.drop_reason is None)
    dropped, accepted, drops = _books(diag)
    print('diagnostics after the fuzz:', {k: v for k, v in diag.items() if k.startswith(('drop.', 'input.'))})
    assert drops == dict(expected_drops), 'drop counters differ from the invalid messages sent'
    assert dropped == sum(expected_drops.values())
    assert accepted == hostile_accepted + valid_count
    assert dropped + accepted == len(messages) + valid_count       # every received message accounted for


def test_fuzzed_node_survives_counts_every_drop_and_still_classifies(ros_context, card_path, data_root):
    card = ModelCard.load(card_path)
    messages = fuzz_messages(SEED, FUZZ_MESSAGES)
    rec = recording(card.preprocessing, data_root, VALID_SEGMENTS, t0_s=VALID_T0_S)
    valid = robot_stream(rec, card.preprocessing, fps=20)
    expected = [int(k) for k in offline_scores(card, rec).argmax(axis=1)]

    node, probe = isolated_classifier(ros_context, card_path, NODE_PARAMS)
    spinner = Spinner(ros_context, node, probe.node)
    with spinner:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        probe.wait_for_subscribers()
        pubs = {'image': probe.image_pub, 'audio': probe.audio_pub}
        for m in messages:                                     # as fast as rclpy publishes
            pubs[m.topic].publish(m.msg)
        total = len(messages) + len(valid)

        wait_for_books(node, len(messages))
        probe.publish_events(valid)
        probe.wait_for(lambda p: {stamp_to_ns(c.window_start) for c in p.classifications}
                       >= {rec.segment_start(i) for i in range(VALID_SEGMENTS)},
                       timeout=TIMEOUT_S, what='classifications of the valid data after the fuzz')
        diag = wait_for_books(node, total)
        assert spinner.thread.is_alive(), 'the executor died'

    _check_books(diag, messages, len(valid))
    got = {stamp_to_ns(c.window_start): c.class_id for c in probe.classifications}
    assert [got[rec.segment_start(i)] for i in range(VALID_SEGMENTS)] == expected



def test_windower_alone_gets_through_the_fuzz_and_classifies_the_valid_data(data_root) -> None:
    """The same hostile sequence straight into the windower (no DDS reordering): one stream's clock
    years ahead of the grid must not make ``pop_ready`` step through every empty window in between
    (it hung the node for hours before ``windows_skipped_empty``), and the valid data after it still
    yields its windows."""
    from av_snn_ros.paths import default_model_card
    from av_snn_ros.ros import conversions
    from av_snn_ros.windowing import AudioVisualWindower, WindowParams
    card = ModelCard.load(default_model_card())
    w = AudioVisualWindower.from_params(card.preprocessing, WindowParams(
        hop_s=1.0, max_buffer_s=30.0, modality_timeout_s=20.0), card.modalities)
    for m in fuzz_messages(SEED, FUZZ_MESSAGES):
        if m.drop_reason is not None:
            continue
        if m.topic == 'image':
            stamp, frame = conversions.image_to_array(m.msg)
            w.push_frame(stamp, frame)
        else:
            stamp, samples, rate = conversions.audio_to_array(m.msg)
            w.push_audio(stamp, samples, rate)
        w.pop_ready()
    assert w.counters['windows_skipped_empty'] > 10 ** 6
    rec = recording(card.preprocessing, data_root, VALID_SEGMENTS, t0_s=VALID_T0_S)
    starts = []
    for stamp, kind, payload in robot_stream(rec, card.preprocessing, fps=20):
        if kind == 'audio':
            w.push_audio(stamp, payload, card.preprocessing.sample_rate)
        else:
            w.push_frame(stamp, payload)
        starts += [win.start_ns for win in w.pop_ready() if not win.flags]
    assert starts[:VALID_SEGMENTS - 1] == [rec.segment_start(i) for i in range(VALID_SEGMENTS - 1)]
