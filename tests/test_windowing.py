"""AudioVisualWindower: grid, exact content, missing modalities, gaps, reordering, clock jumps, rates."""
from __future__ import annotations

import numpy as np
import pytest

from av_snn_ros.preprocessing import PreprocessConfig, resample
from av_snn_ros.windowing import (FLAG_AUDIO_GAP, FLAG_RATE_CHANGE, NS_PER_S, AudioVisualWindower,
                                  WindowParams)

CFG = PreprocessConfig()           # 16 kHz, W = 1 s, T = 4
SR = CFG.sample_rate
CHUNK = 320                        # 20 ms chunks, as a microphone driver sends
FPS = 30
T0 = 100 * NS_PER_S                # stream start, on the hop grid


def _signal(seconds: float, rate: int = SR, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, int(seconds * rate)).astype(np.float32)


def _frame(i: int) -> np.ndarray:
    """A tiny frame that encodes its own index (so tests can tell which frame a step got)."""
    return np.full((4, 5), i % 256, dtype=np.uint8)


def _events(signal: np.ndarray, t0: int = T0, rate: int = SR, chunk: int = CHUNK, fps: int = FPS,
            frame_t0: int | None = None, frame_count: int | None = None):
    """Audio chunks and frames of one recording, merged in stamp order: (stamp, kind, payload)."""
    events = []
    for i in range(0, len(signal) - chunk + 1, chunk):
        events.append((t0 + i * NS_PER_S // rate, 'a', signal[i:i + chunk]))
    frame_t0 = t0 if frame_t0 is None else frame_t0
    n_frames = int(len(signal) / rate * fps) if frame_count is None else frame_count
    for j in range(n_frames):
        events.append((frame_t0 + j * NS_PER_S // fps, 'v', j))
    events.sort(key=lambda e: (e[0], e[1]))
    return events


def _run(w: AudioVisualWindower, events, rate: int = SR):
    out = []
    for stamp, kind, payload in events:
        if kind == 'a':
            w.push_audio(stamp, payload, rate)
        else:
            w.push_frame(stamp, _frame(payload))
        out.extend(w.pop_ready())
    return out


def _expected_frame_ids(start_ns: int, frame_t0: int = T0, fps: int = FPS) -> list[int]:
    ids = []
    for c in CFG.step_centers_s():
        centre = start_ns + int(round(c * NS_PER_S))
        ids.append(max(j for j in range(10_000) if frame_t0 + j * NS_PER_S // fps <= centre))
    return ids


@pytest.mark.parametrize('hop_s', [0.5, 0.25, 1.0])
def test_windows_follow_grid_and_carry_exact_content(hop_s):
    seconds = 5
    signal = _signal(seconds)
    w = AudioVisualWindower(CFG, hop_s=hop_s)
    windows = _run(w, _events(signal))
    hop_ns = int(hop_s * NS_PER_S)
    # every window that fits inside the recording, on the grid, in order
    expected_starts = list(range(T0, T0 + seconds * NS_PER_S - NS_PER_S + 1, hop_ns))
    assert [x.start_ns for x in windows] == expected_starts
    for win in windows:
        assert win.end_ns - win.start_ns == NS_PER_S
        offset = (win.start_ns - T0) * SR // NS_PER_S
        np.testing.assert_array_equal(win.audio, signal[offset:offset + CFG.window_samples])
        assert len(win.frames) == CFG.timesteps
        assert [int(f[0, 0]) for f in win.frames] == [i % 256 for i in _expected_frame_ids(win.start_ns)]
        assert win.flags == set()
    assert w.counters['windows_formed'] == len(windows)
    assert w.counters['windows_dropped'] == 0


def test_stream_starting_off_grid_starts_at_next_grid_point():
    t0 = T0 + 230_000_000                      # 0.23 s after a grid point
    signal = _signal(3)
    w = AudioVisualWindower(CFG, hop_s=0.5)
    windows = _run(w, _events(signal, t0=t0))
    assert windows[0].start_ns == T0 + NS_PER_S // 2
    assert all((x.start_ns - T0) % (NS_PER_S // 2) == 0 for x in windows)
    first = windows[0]
    offset = (first.start_ns - t0) * SR // NS_PER_S
    np.testing.assert_array_equal(first.audio, signal[offset:offset + CFG.window_samples])


def test_missing_visual_is_counted_and_not_emitted():
    signal = _signal(6)
    events = [e for e in _events(signal)
              if not (e[1] == 'v' and T0 + 2 * NS_PER_S <= e[0] < T0 + 3 * NS_PER_S)]   # camera stalls 1 s
    w = AudioVisualWindower(CFG, hop_s=0.5)
    windows = _run(w, events)
    starts = [(x.start_ns - T0) / NS_PER_S for x in windows]
    # windows with a step centre in [2 + max_age, 3) have no fresh frame
    assert starts == [0.0, 0.5, 1.0, 3.0, 3.5, 4.0, 4.5, 5.0]
    assert w.counters['missing_visual'] == 3      # windows at 1.5, 2.0, 2.5
    assert w.counters['missing_audio'] == 0


def test_missing_audio_counted_once_video_is_far_ahead():
    signal = _signal(8)
    events = [e for e in _events(signal)
              if not (e[1] == 'a' and T0 + 2 * NS_PER_S <= e[0] < T0 + 6 * NS_PER_S)]  # mic silent 4 s
    w = AudioVisualWindower(CFG, hop_s=0.5, max_buffer_s=3.0)
    windows = _run(w, events)
    assert w.counters['missing_audio'] > 0
    assert w.counters['missing_visual'] == 0
    starts = {(x.start_ns - T0) / NS_PER_S for x in windows}
    assert starts.isdisjoint({1.5, 2.0, 3.0, 4.0, 5.0})
    assert {0.0, 0.5, 1.0} <= starts
    # every grid window is either emitted or accounted for as missing audio
    assert w.counters['windows_formed'] + w.counters['windows_dropped'] >= 12


def test_gap_is_zero_filled_and_flagged():
    signal = _signal(4)
    lost = T0 + 1_500_000_000                   # one 20 ms chunk lost at 1.5 s
    events = [e for e in _events(signal) if not (e[1] == 'a' and e[0] == lost)]
    w = AudioVisualWindower(CFG, hop_s=0.5)
    windows = {(x.start_ns - T0) / NS_PER_S: x for x in _run(w, events)}
    assert set(windows) == {0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0}
    for start, win in windows.items():
        touched = start <= 1.5 < start + 1.0
        assert (FLAG_AUDIO_GAP in win.flags) == touched
        offset = int(start * SR)
        expected = signal[offset:offset + CFG.window_samples].copy()
        if touched:
            k = int(1.5 * SR) - offset
            expected[k:k + CHUNK] = 0.0
        np.testing.assert_array_equal(win.audio, expected)
    assert w.counters['audio_gap_events'] == 1
    assert w.counters['windows_flagged_audio_gap'] == 2


def test_gap_drop_policy_and_large_gap_drop_windows():
    signal = _signal(4)
    lost = T0 + 1_500_000_000
    events = [e for e in _events(signal) if not (e[1] == 'a' and e[0] == lost)]
    w = AudioVisualWindower(CFG, hop_s=0.5, gap_policy='drop')
    starts = [(x.start_ns - T0) / NS_PER_S for x in _run(w, events)]
    assert starts == [0.0, 0.5, 2.0, 2.5, 3.0]
    assert w.counters['audio_gap'] == 2
    # zero-fill, but 0.2 s missing > max_gap_s = 0.1 s: dropped too
    events = [e for e in _events(signal)
              if not (e[1] == 'a' and lost <= e[0] < lost + 200_000_000)]
    w = AudioVisualWindower(CFG, hop_s=0.5, max_gap_s=0.1)
    starts = [(x.start_ns - T0) / NS_PER_S for x in _run(w, events)]
    assert starts == [0.0, 0.5, 2.0, 2.5, 3.0]
    assert w.counters['audio_gap'] == 2


def test_out_of_order_chunks_and_frames_are_repaired():
    signal = _signal(4)
    events = _events(signal)
    idx = [i for i, e in enumerate(events) if e[1] == 'a' and e[0] == T0 + 1_200_000_000][0]
    chunk = events.pop(idx)
    events.insert(idx + 6, chunk)               # arrives ~3 chunks late
    vidx = [i for i, e in enumerate(events) if e[1] == 'v' and e[2] == 45][0]
    frame = events.pop(vidx)
    events.insert(vidx + 1, frame)              # frame swapped with the next event
    w = AudioVisualWindower(CFG, hop_s=0.5)
    windows = _run(w, events)
    assert len(windows) == 7
    for win in windows:
        offset = (win.start_ns - T0) * SR // NS_PER_S
        np.testing.assert_array_equal(win.audio, signal[offset:offset + CFG.window_samples])
        assert win.flags == set()
        assert [int(f[0, 0]) for f in win.frames] == [i % 256 for i in _expected_frame_ids(win.start_ns)]
    assert w.counters['audio_reordered'] == 1


def test_duplicates_are_dropped_and_counted():
    signal = _signal(3)
    events = []
    for e in _events(signal):
        events.append(e)
        if e[0] in (T0 + 500_000_000, T0 + NS_PER_S):   # both streams repeat a message
            events.append(e)
    w = AudioVisualWindower(CFG, hop_s=0.5)
    windows = _run(w, events)
    assert len(windows) == 5
    for win in windows:
        offset = (win.start_ns - T0) * SR // NS_PER_S
        np.testing.assert_array_equal(win.audio, signal[offset:offset + CFG.window_samples])
    assert w.counters['audio_duplicate'] == 2
    assert w.counters['frame_duplicate'] == 2


def test_clock_jump_backwards_resets_and_recovers():
    """A bag played in a loop: both streams jump back to the start; windows restart on the grid."""
    signal = _signal(3)
    w = AudioVisualWindower(CFG, hop_s=0.5)
    first = _run(w, _events(signal))
    second = _run(w, _events(signal))
    assert [x.start_ns for x in first] == [x.start_ns for x in second]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.audio, b.audio)
    assert w.counters['clock_jump_audio'] + w.counters['clock_jump_frames'] >= 1


def test_clock_jump_forwards_resets_and_recovers():
    signal = _signal(3)
    w = AudioVisualWindower(CFG, hop_s=0.5)
    first = _run(w, _events(signal))
    later = T0 + 3600 * NS_PER_S
    second = _run(w, _events(signal, t0=later))
    assert len(first) == len(second) == 5
    assert second[0].start_ns == later
    np.testing.assert_array_equal(second[0].audio, signal[:CFG.window_samples])
    assert w.counters['clock_jump_audio'] + w.counters['clock_jump_frames'] >= 1


def test_native_rate_stream_is_resampled_per_window():
    """8 kHz audio (FSDD's rate) is cut at 8 kHz and resampled to 16 kHz per window."""
    seconds = 4
    sig8 = _signal(seconds, rate=8000)
    w = AudioVisualWindower(CFG, hop_s=0.5)
    windows = _run(w, _events(sig8, rate=8000, chunk=160), rate=8000)
    # the last window (3..4 s) needs a few ms of resampling context after the recording ends
    assert len(windows) == 6
    full = resample(sig8, 8000, SR)              # the whole recording resampled at once
    for win in windows:
        offset = (win.start_ns - T0) * SR // NS_PER_S
        assert win.audio.shape == (CFG.window_samples,)
        np.testing.assert_allclose(win.audio, full[offset:offset + CFG.window_samples], atol=2e-3)
        assert win.flags == set()


def test_rate_change_flags_windows_spanning_it():
    sig_a = _signal(2)
    sig_b = _signal(2, rate=8000, seed=1)
    ev = _events(sig_a) + [e for e in _events(sig_b, t0=T0 + 2 * NS_PER_S, rate=8000, chunk=160)
                           if e[1] == 'a']
    ev += [(T0 + j * NS_PER_S // FPS, 'v', j) for j in range(60, 120)]
    ev.sort(key=lambda e: (e[0], e[1]))
    w = AudioVisualWindower(CFG, hop_s=0.5)
    windows = []
    for stamp, kind, payload in ev:
        if kind == 'a':
            w.push_audio(stamp, payload, SR if stamp < T0 + 2 * NS_PER_S else 8000)
        else:
            w.push_frame(stamp, _frame(payload))
        windows.extend(w.pop_ready())
    by_start = {(x.start_ns - T0) / NS_PER_S: x for x in windows}
    assert w.counters['rate_change_events'] == 1
    for start, win in by_start.items():
        assert win.audio.shape == (CFG.window_samples,)
        assert (FLAG_RATE_CHANGE in win.flags) == (start < 2.0 < start + 1.0 or start == 2.0), start
    assert {1.5, 2.0} <= set(by_start)
    late = by_start[max(by_start)]
    offset = int((max(by_start) - 2.0) * SR)
    np.testing.assert_allclose(late.audio, resample(sig_b, 8000, SR)[offset:offset + SR], atol=2e-3)


def test_buffers_stay_bounded_without_consumer():
    """60 s of input with nothing windowable: video stamps lag audio by 10 s, beyond max_buffer_s."""
    signal = _signal(60)
    w = AudioVisualWindower(CFG, hop_s=0.5, max_buffer_s=3.0)
    peak_audio, peak_frames = 0.0, 0
    lag = 10 * NS_PER_S
    events = _events(signal, frame_t0=T0 - lag)
    events.sort(key=lambda e: e[0] + (lag if e[1] == 'v' else 0))       # arrival order
    for stamp, kind, payload in events:
        if kind == 'a':
            w.push_audio(stamp, payload, SR)
        else:
            w.push_frame(stamp, _frame(payload))
        w.pop_ready()
        peak_audio = max(peak_audio, w.buffered_audio_s)
        peak_frames = max(peak_frames, w.buffered_frames)
    assert peak_audio <= 3.0 + 0.05
    assert peak_frames <= 3.0 * FPS
    assert w.counters['windows_formed'] == 0


def test_superseded_frames_are_not_kept():
    """Only frames that can be some step centre's newest frame stay buffered (memory bound)."""
    signal = _signal(3)
    w = AudioVisualWindower(CFG, hop_s=1.0, max_buffer_s=3.0)
    for stamp, kind, payload in _events(signal, fps=60):
        if kind == 'a':
            w.push_audio(stamp, payload, SR)
        else:
            w.push_frame(stamp, _frame(payload))
    # 3 s at 60 fps = 180 frames arrived; 4 centres per second can use at most 12 (+1 newest)
    assert w.buffered_frames <= 13


@pytest.mark.parametrize('bad', [
    dict(hop_s=0.0), dict(max_frame_age_s=-1.0), dict(gap_policy='interpolate'),
    dict(max_gap_s=2.0), dict(max_buffer_s=1.0), dict(gap_tolerance_s=-0.1),
])
def test_bad_params_raise_value_error_naming_the_setting(bad):
    key = next(iter(bad))
    with pytest.raises(ValueError, match=key):
        AudioVisualWindower(CFG, **bad)


def test_malformed_calls_raise_value_error():
    w = AudioVisualWindower(CFG)
    with pytest.raises(ValueError, match='mono'):
        w.push_audio(T0, np.zeros((10, 2), np.float32), SR)
    with pytest.raises(ValueError, match='NaN'):
        w.push_audio(T0, np.array([0.0, np.nan], np.float32), SR)
    with pytest.raises(ValueError, match='rate'):
        w.push_audio(T0, np.zeros(10, np.float32), 0)
    with pytest.raises(ValueError, match='uint8'):
        w.push_frame(T0, np.zeros((4, 4), np.float32))
    assert WindowParams().gap_policy in ('zero_fill', 'drop')


def _window_with_frames(frame_stamps: list[int], **params) -> tuple[list, AudioVisualWindower]:
    """Audio for [T0, T0 + 1.5 s), frames (each encoding its index) at ``frame_stamps``; windows emitted."""
    w = AudioVisualWindower(CFG, hop_s=1.0, **params)
    for j, stamp in enumerate(frame_stamps):
        w.push_frame(stamp, _frame(j))
    signal = _signal(1.5)
    for i in range(0, len(signal), CHUNK):
        w.push_audio(T0 + i * NS_PER_S // SR, signal[i:i + CHUNK], SR)
    return w.pop_ready(), w


# Step centres of the window [T0, T0 + 1 s) with W = 1 s, T = 4, written out by hand: (k + 0.5) / 4 s.
CENTRES_NS = [T0 + 125_000_000, T0 + 375_000_000, T0 + 625_000_000, T0 + 875_000_000]


def test_frames_exactly_at_step_centres_are_the_ones_used():
    """A frame stamped exactly at a step centre is that step's frame (``<=``, not ``<``)."""
    windows, w = _window_with_frames(CENTRES_NS + [T0 + NS_PER_S])
    assert [x.start_ns for x in windows] == [T0]
    assert [int(f[0, 0]) for f in windows[0].frames] == [0, 1, 2, 3]
    assert w.counters['missing_visual'] == 0


@pytest.mark.parametrize('age_s', [0.05, 0.2])
def test_max_frame_age_is_the_exact_limit(age_s):
    """The first step's only frame is exactly ``max_frame_age_s`` old at its centre: used; one
    nanosecond older: the window is dropped as missing visual. (Every other step has a frame at its
    centre, and a frame after the window lets the windower decide.)"""
    age_ns = int(round(age_s * NS_PER_S))
    later = CENTRES_NS[1:] + [T0 + NS_PER_S]
    windows, w = _window_with_frames([CENTRES_NS[0] - age_ns] + later, max_frame_age_s=age_s)
    assert [x.start_ns for x in windows] == [T0]
    assert [int(f[0, 0]) for f in windows[0].frames] == [0, 1, 2, 3]
    windows, w = _window_with_frames([CENTRES_NS[0] - age_ns - 1] + later, max_frame_age_s=age_s)
    assert windows == [] and w.counters['missing_visual'] == 1 and w.counters['windows_dropped'] == 1


def test_default_max_frame_age_is_200_ms():
    """docs/runtime.md documents 0.2 s; the default must hold that exact limit, not just a nearby one."""
    assert WindowParams().max_frame_age_s == 0.2
    later = CENTRES_NS[1:] + [T0 + NS_PER_S]
    windows, _ = _window_with_frames([CENTRES_NS[0] - 200_000_000] + later)
    assert len(windows) == 1
    windows, w = _window_with_frames([CENTRES_NS[0] - 200_000_001] + later)
    assert windows == [] and w.counters['missing_visual'] == 1


def test_camera_at_40_fps_puts_a_frame_on_every_centre():
    """At 40 fps frames are 25 ms apart, so every centre (125 ms + k 250 ms) falls on a frame:
    window start s (in s after T0) uses frames 40 s + 5, + 15, + 25, + 35 (hand computed)."""
    signal = _signal(3)
    w = AudioVisualWindower(CFG, hop_s=0.5)
    windows = _run(w, _events(signal, fps=40))
    assert [(x.start_ns - T0) / NS_PER_S for x in windows] == [0.0, 0.5, 1.0, 1.5, 2.0]
    for win in windows:
        first = 40 * (win.start_ns - T0) // NS_PER_S + 5
        assert [int(f[0, 0]) for f in win.frames] == [first, first + 10, first + 20, first + 30]
