"""Transport and sensor faults during a replay of real data: the node keeps publishing and flags windows.

Twelve consecutive 1 s segments of real AV-digits data are replayed (reliable) into the real node with
injected faults: in the *faulty* segments 10 % of the messages are dropped, 10 % duplicated and
10 % reordered (swapped with the next message of the same stream); the camera stalls for two segments;
the microphone switches from 16 kHz to 8 kHz in the middle of a segment. Checked per window:

- clean segments are published unflagged with exactly the offline prediction (duplicates elsewhere and
  the recovery after each fault leave them untouched);
- faulty segments that lost audio are published flagged ``audio_gap`` (zero-filled, within max_gap_s);
- stalled segments are published from audio alone (flag ``missing_image``, no visual head, the audio head
  still reported), nothing is dropped for the stall, /diagnostics WARNs naming the image stream, and
  publishing with the camera resumes;
- the window spanning the rate change is flagged ``rate_change``; windows after it are published;
- every counter the faults touch has exactly the value derived from the injected message list.

The messages go out in lockstep: each is taken by the node before the next is sent. Camera and audio are
separate topics, so an unpaced burst reaches the node in an interleaving the executor picks, and a few
counters (a late chunk that completes its window before or after the frames arrive) would then have
two right values. Fast, unpaced delivery is the subject of tests/test_fuzz_node.py.
"""
from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
from rclpy.lifecycle import TransitionCallbackReturn

from av_snn_ros.model_card import ModelCard
from av_snn_ros.preprocessing import resample
from av_snn_ros.ros.conversions import array_to_audio, array_to_image, stamp_to_ns
from av_snn_ros.decision import FLAG_CONFLICT
from av_snn_ros.windowing import FLAG_AUDIO_GAP, FLAG_MISSING_IMAGE, FLAG_RATE_CHANGE
from runtime_helpers import NS_PER_S, Probe, Spinner, make_card, offline_heads, recording, robot_stream

SEED = 7
SEGMENTS = 12
FAULTY = (1, 3, 8)                    # segments with dropped / duplicated / reordered messages
STALLED = (5, 6)                      # camera sends nothing during these segments
RATE_CHANGE_S = 10.5                  # the microphone switches rate here (mid segment 10)
NEW_RATE = 8000
P_DROP = P_DUPLICATE = P_REORDER = 0.10
FPS = 20
CHUNK_S = 0.02
DEPTH = 5000                          # deeper than the whole replay: reliable transport loses nothing
NODE_PARAMS = {'window.hop_s': 1.0, 'window.max_gap_s': 0.5, 'window.max_frame_age_s': 0.2,
               'qos.sensor.reliability': 'reliable',
               'qos.sensor.depth': DEPTH, 'inference.queue_size': 100, 'diagnostic_updater.period': 0.2,
               'backend.name': 'torch', 'backend.threads': 1, 'window.max_buffer_s': 30.0,
               'window.modality_timeout_s': 20.0, 'diagnostic_updater.use_fqn': True}
TIMEOUT_S = 120.0
POLL_S = 0.05


def isolated_classifier(context, card_path, params: dict):
    """The classifier and a probe in a private namespace (other test runs may share the ROS domain)."""
    from rclpy.parameter import Parameter

    from av_snn_ros.ros.classifier_node import AvClassifierNode
    namespace = f'/faults_{uuid.uuid4().hex[:8]}'
    values = {'model.card': str(card_path), **params}
    node = AvClassifierNode(context=context, namespace=namespace,
                            parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    return node, Probe(context, namespace=namespace, depth=DEPTH)


def wait_until(predicate, what: str, timeout: float = TIMEOUT_S, poll_s: float = POLL_S) -> None:
    """Poll ``predicate()`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout} s waiting for {what}')
        pause.wait(poll_s)


def taken(node) -> int:
    """Sensor messages the node's windower has received so far (every message here is well-formed)."""
    values = node.diagnostics_values()
    return int(values.get('input.frames', 0)) + int(values.get('input.audio_chunks', 0))


@dataclass
class Event:
    slot_ns: int          # when, in the original stream order, this message goes out
    stamp_ns: int
    kind: str             # 'audio' / 'image'
    payload: np.ndarray
    rate: int = 16000


@dataclass
class Faults:
    events: list[Event]
    dropped_audio_segments: set[int]
    counts: Counter          # '{audio,image}_{dropped,duplicated,reordered}'
    image_swaps: list[tuple[int, int]]      # (earlier stamp, later stamp) of each reordered frame pair
    audio_swaps: list[tuple[int, int]]      # (earlier stamp, end of the later chunk) of each reordered pair

    def late_at_window_end(self, t0_ns: int) -> set[int]:
        """Segments whose last chunk came first in a reordered pair: that chunk completes the window, so
        the window is cut (flagged ``audio_gap``) before the late chunk arrives, which then finds its window
        gone and counts as ``audio_duplicate``."""
        return {_segment(early, t0_ns) for early, late_end in self.audio_swaps if (late_end - t0_ns) % NS_PER_S == 0}


def _segment(stamp_ns: int, t0_ns: int) -> int:
    return int((stamp_ns - t0_ns) // NS_PER_S)


def _with_rate_change(events: list[Event], t0_ns: int) -> list[Event]:
    """Audio from RATE_CHANGE_S on re-chunked at NEW_RATE (same signal, same stamps grid)."""
    change_ns = t0_ns + int(RATE_CHANGE_S * NS_PER_S)
    before = [e for e in events if e.kind != 'audio' or e.stamp_ns < change_ns]
    tail = [e for e in events if e.kind == 'audio' and e.stamp_ns >= change_ns]
    signal = resample(np.concatenate([e.payload for e in tail]), 16000, NEW_RATE)
    chunk = int(round(CHUNK_S * NEW_RATE))
    out = []
    for i in range(0, len(signal) - chunk + 1, chunk):
        stamp = change_ns + i * NS_PER_S // NEW_RATE
        out.append(Event(stamp, stamp, 'audio', signal[i:i + chunk], NEW_RATE))
    return sorted(before + out, key=lambda e: (e.slot_ns, e.kind))


def inject(events: list[Event], t0_ns: int, rng: np.random.Generator) -> Faults:
    """Stall the camera, then drop / duplicate / reorder within the faulty segments (per stream)."""
    events = [e for e in events if not (e.kind == 'image' and _segment(e.stamp_ns, t0_ns) in STALLED)]
    counts: Counter = Counter()
    dropped_audio: set[int] = set()
    image_swaps: list[tuple[int, int]] = []
    audio_swaps: list[tuple[int, int]] = []
    out: list[Event] = []
    for kind in ('audio', 'image'):
        stream = [e for e in events if e.kind == kind]
        i = 0
        while i < len(stream):
            e = stream[i]
            seg = _segment(e.stamp_ns, t0_ns)
            if seg not in FAULTY:
                out.append(e)
                i += 1
                continue
            u = rng.random()
            if u < P_DROP:
                counts[f'{kind}_dropped'] += 1
                if kind == 'audio':
                    dropped_audio.add(seg)
            elif u < P_DROP + P_DUPLICATE:
                counts[f'{kind}_duplicated'] += 1
                out += [e, Event(e.slot_ns + 1, e.stamp_ns, e.kind, e.payload, e.rate)]
            elif (u < P_DROP + P_DUPLICATE + P_REORDER and i + 1 < len(stream)
                  and _segment(stream[i + 1].stamp_ns, t0_ns) == seg):
                counts[f'{kind}_reordered'] += 1
                nxt = stream[i + 1]            # the later message goes out in this one's slot
                if kind == 'image':
                    image_swaps.append((e.stamp_ns, nxt.stamp_ns))
                else:
                    audio_swaps.append((e.stamp_ns, nxt.stamp_ns + len(nxt.payload) * NS_PER_S // nxt.rate))
                out += [Event(e.slot_ns, nxt.stamp_ns, kind, nxt.payload, nxt.rate),
                        Event(nxt.slot_ns, e.stamp_ns, kind, e.payload, e.rate)]
                i += 1
            else:
                out.append(e)
            i += 1
    out.sort(key=lambda e: (e.slot_ns, e.kind))
    return Faults(out, dropped_audio, counts, image_swaps, audio_swaps)


def centres_ns(t0_ns: int, cfg) -> list[int]:
    """Every step centre of the 1 s hop grid over the replay: segment start + (k + 0.5) W / T."""
    step = NS_PER_S // cfg.timesteps
    return [t0_ns + i * NS_PER_S + k * step + step // 2 for i in range(SEGMENTS + 1) for k in range(cfg.timesteps)]


def expected_input_counters(faults: Faults, t0_ns: int, cfg, max_age_ns: int) -> dict[str, int]:
    """What the node's windower must count for the injected faults, derived from the message list alone.

    - every message is counted on arrival (``frames``, ``audio_chunks``);
    - a duplicate goes out right after its original, so it is always recognised (``*_duplicate``);
    - a reordered audio pair leaves a hole for one chunk that the late chunk fills (``audio_reordered``),
      unless the pair ends its window (see :meth:`Faults.late_at_window_end`): then it is a duplicate;
    - a late frame is kept only if some step centre lies in [its stamp, the newer frame's stamp), i.e.
      it is the newest frame at some centre; otherwise it is ``frame_superseded``;
    - a ``audio_gap_events`` is every chunk stamped beyond the end of all audio sent before it (more than
      ``window.gap_tolerance_s`` = 10 ms: one lost 20 ms chunk is always a gap);
    - a window is classified without the image (``missing_image``) when a step centre has no frame at
      most ``max_frame_age_s`` old.
    """
    audio = [e for e in faults.events if e.kind == 'audio']
    images = [e for e in faults.events if e.kind == 'image']
    centres = centres_ns(t0_ns, cfg)
    gaps, end = 0, None
    for e in audio:
        stop = e.stamp_ns + len(e.payload) * NS_PER_S // e.rate
        if end is not None and e.stamp_ns > end + NS_PER_S // 100:
            gaps += 1
        end = stop if end is None else max(end, stop)
    stamps = sorted({e.stamp_ns for e in images})
    stale = {(c - t0_ns) // NS_PER_S for c in centres[:SEGMENTS * cfg.timesteps]
             if not any(c - max_age_ns <= s <= c for s in stamps)}
    superseded = sum(1 for early, late in faults.image_swaps if not any(early <= c < late for c in centres))
    return {'input.frames': len(images), 'input.audio_chunks': len(audio),
            'input.frame_duplicate': faults.counts['image_duplicated'],
            'input.audio_duplicate': faults.counts['audio_duplicated'] + len(faults.late_at_window_end(t0_ns)),
            'input.audio_reordered': faults.counts['audio_reordered'] - len(faults.late_at_window_end(t0_ns)),
            'input.frame_superseded': superseded, 'input.audio_gap_events': gaps,
            'input.windows_flagged_missing_image': len(stale)}


@pytest.fixture(scope='module')
def card_path(tmp_path_factory):
    return make_card(tmp_path_factory)


def test_faults_are_flagged_and_the_node_keeps_publishing(ros_context, card_path, data_root):
    card = ModelCard.load(card_path)
    cfg = card.preprocessing
    # one extra trailing segment: at 8 kHz a window needs resampling context past its end to complete
    rec = recording(cfg, data_root, SEGMENTS + 1)
    offline = offline_heads(card, rec)
    expected = [int(k) for k in offline['fused'].argmax(axis=1)]
    clean = [Event(s, s, k, p) for s, k, p in robot_stream(rec, cfg, fps=FPS, chunk_s=CHUNK_S)]
    faults = inject(_with_rate_change(clean, rec.t0_ns), rec.t0_ns, np.random.default_rng(SEED))
    assert all(faults.counts[f'{kind}_{what}'] > 0 for kind in ('audio', 'image')
               for what in ('dropped', 'duplicated', 'reordered')), faults.counts
    assert faults.dropped_audio_segments, 'the seed must drop audio in some faulty segment'
    rate_segment = int(RATE_CHANGE_S)
    last = SEGMENTS - 1

    node, probe = isolated_classifier(ros_context, card_path, NODE_PARAMS)
    spinner = Spinner(ros_context, node, probe.node)
    with spinner:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        probe.wait_for_subscribers()
        for sent, e in enumerate(faults.events, start=1):
            if e.kind == 'audio':
                probe.audio_pub.publish(array_to_audio(e.payload, e.stamp_ns, e.rate, 'F32LE'))
            else:
                probe.image_pub.publish(array_to_image(e.payload, e.stamp_ns, 'rgb8', frame_id='camera'))
            wait_until(lambda: taken(node) >= sent, f'the node to take message {sent}', poll_s=0.0005)
        try:
            probe.wait_for(lambda p: any(stamp_to_ns(c.window_start) == rec.segment_start(last)
                                         for c in p.classifications),
                           timeout=TIMEOUT_S, what='the window after every fault')
        except AssertionError:
            starts = sorted((stamp_to_ns(c.window_start) - rec.t0_ns) / NS_PER_S for c in probe.classifications)
            print('published window starts (s after t0):', starts, '\ndiagnostics:', node.diagnostics_values())
            raise
        def settled() -> bool:
            values = node.diagnostics_values()
            return int(values['windows_formed']) == int(values['windows_classified']) == len(probe.classifications)
        wait_until(settled, 'every formed window published, counted and received')
        assert spinner.thread.is_alive(), 'the executor died'
        diag = node.diagnostics_values()

    got = {stamp_to_ns(c.window_start): c for c in probe.classifications}
    published = {i for i in range(SEGMENTS) if rec.segment_start(i) in got}
    for i in range(SEGMENTS):
        msg = got.get(rec.segment_start(i))
        flags = set(msg.flags) if msg is not None else None
        if i in STALLED:
            assert msg is not None and flags == {FLAG_MISSING_IMAGE}, f'stalled segment {i}: {flags}'
            assert (msg.visual_class_id, msg.visual_confidence) == (-1, 0.0)
            assert msg.audio_class_id >= 0
        elif i in faults.dropped_audio_segments:
            assert msg is not None and FLAG_AUDIO_GAP in flags, f'segment {i} lost audio: flags {flags}'
        elif i == rate_segment:
            assert msg is not None and FLAG_RATE_CHANGE in flags, f'segment {i} spans the rate change: {flags}'
        elif i > rate_segment:
            assert msg is not None and FLAG_RATE_CHANGE not in flags, f'segment {i}: {flags}'
        elif i not in FAULTY:
            assert msg is not None, f'clean segment {i} was not published'
            # conflict: the heads' own disagreement, checked exactly in test_ros_classifier
            assert flags - {FLAG_CONFLICT} == set(), f'clean segment {i} flagged {flags}'
            assert msg.class_id == expected[i], f'clean segment {i}: node {msg.class_id}, offline {expected[i]}'
            # every published number is the offline one, each head at the card's logit_scale
            assert msg.confidence == pytest.approx(offline['fused'][i].max(), rel=1e-4, abs=1e-6), i
            for head in ('audio', 'visual'):
                assert getattr(msg, f'{head}_class_id') == int(offline[head][i].argmax()), (i, head)
                assert getattr(msg, f'{head}_confidence') == pytest.approx(offline[head][i].max(),
                                                                           rel=1e-4, abs=1e-6), (i, head)
    assert published >= set(range(STALLED[-1] + 1, SEGMENTS)), 'publishing did not resume after the stall'
    want = expected_input_counters(faults, rec.t0_ns, cfg, int(NODE_PARAMS['window.max_frame_age_s'] * NS_PER_S))
    assert want['input.windows_flagged_missing_image'] == len(STALLED)   # only the stall lacks frames
    assert {k: int(diag.get(k, 0)) for k in want} == want
    assert diag['dropped_missing_visual'] == '0'                 # degraded, not dropped
    with probe.cond:
        warnings = [d['_message'] for d in probe.diagnostics if d['_level'] == b'\x01']
    assert any('without image' in w for w in warnings), warnings
    assert int(diag.get('input.audio_overlap', 0)) == 0          # duplicates are exact repeats
    assert int(diag['input.rate_change_events']) == 1
    assert diag['messages_dropped'] == '0'                       # faults are not malformed messages
    assert int(diag['dropped_busy']) == 0                        # the queue holds the whole replay
    flagged = {k: sum(flag in c.flags for c in probe.classifications) for k, flag in
               (('input.windows_flagged_audio_gap', FLAG_AUDIO_GAP),
                ('input.windows_flagged_rate_change', FLAG_RATE_CHANGE))}
    assert {k: int(diag.get(k, 0)) for k in flagged} == flagged  # each flagged window published once
    assert flagged['input.windows_flagged_rate_change'] == 1
    gap_segments = {i for i in range(SEGMENTS)
                    if rec.segment_start(i) in got and FLAG_AUDIO_GAP in got[rec.segment_start(i)].flags}
    assert gap_segments == faults.dropped_audio_segments | faults.late_at_window_end(rec.t0_ns)
    assert int(diag['windows_formed']) == int(diag['windows_classified']) == len(probe.classifications)


def test_unplugged_camera_keeps_the_node_classifying_from_audio(ros_context, card_path, data_root):
    """The camera sends one segment and is then gone for good while audio runs on: the node keeps
    publishing, each window once audio has run ``window.modality_timeout_s`` past its end, flagged
    ``missing_image`` without a visual head, and /diagnostics WARNs naming the image stream."""
    card = ModelCard.load(card_path)
    segments, timeout_s = 5, 1.0
    rec = recording(card.preprocessing, data_root, segments)
    events = [e for e in robot_stream(rec, card.preprocessing, fps=FPS, chunk_s=CHUNK_S)
              if e[1] == 'audio' or e[0] < rec.segment_start(1)]
    params = {**NODE_PARAMS, 'window.modality_timeout_s': timeout_s}
    node, probe = isolated_classifier(ros_context, card_path, params)
    # audio ends at segment 5's start: window s is given up on video once 5 > s + 1 + timeout
    decided = [i for i in range(segments) if rec.segment_start(i) + rec.window_ns + int(timeout_s * NS_PER_S)
               < rec.segment_start(segments)]
    with Spinner(ros_context, node, probe.node):
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        probe.wait_for_subscribers()
        probe.publish_events(events)
        probe.wait_for(lambda p: len(p.classifications) >= len(decided), what=f'{len(decided)} classifications')
        probe.wait_for(lambda p: any('without image' in d['_message'] and d['_level'] == b'\x01'
                                     for d in p.diagnostics), what='a WARN naming the image stream')
    got = {stamp_to_ns(c.window_start): c for c in probe.classifications}
    assert sorted(got) == [rec.segment_start(i) for i in decided] == [rec.segment_start(i) for i in (0, 1, 2)]
    for i in decided:
        m = got[rec.segment_start(i)]
        if i == 0:
            assert FLAG_MISSING_IMAGE not in m.flags and m.visual_class_id >= 0
        else:
            assert FLAG_MISSING_IMAGE in m.flags, (i, list(m.flags))
            assert (m.visual_class_id, m.visual_confidence) == (-1, 0.0) and m.audio_class_id >= 0
