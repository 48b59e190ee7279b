"""AudioVisualWindower: grid, exact content, missing modalities (degrade, don't stop), audio-only windows,
gaps, reordering, clock jumps, rates."""
from __future__ import annotations

import numpy as np
import pytest

from av_snn_ros.preprocessing import PreprocessConfig, resample
from av_snn_ros.windowing import (FLAG_AUDIO_GAP, FLAG_MISSING_AUDIO, FLAG_MISSING_IMAGE, FLAG_RATE_CHANGE,
                                  NS_PER_S, AudioVisualWindower, WindowParams)

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


def _starts(windows) -> list[float]:
    return [(x.start_ns - T0) / NS_PER_S for x in windows]


def _assert_audio_exact(win, signal) -> None:
    offset = (win.start_ns - T0) * SR // NS_PER_S
    np.testing.assert_array_equal(win.audio, signal[offset:offset + CFG.window_samples])


def test_camera_pause_windows_are_classified_from_audio_and_flagged():
    """The camera sends nothing for 1 s: the windows without a fresh frame at some step are cut from audio
    alone (frames None, flag missing_image) instead of being dropped; the others are untouched."""
    signal = _signal(6)
    events = [e for e in _events(signal)
              if not (e[1] == 'v' and T0 + 2 * NS_PER_S <= e[0] < T0 + 3 * NS_PER_S)]   # camera pauses 1 s
    w = AudioVisualWindower(CFG, hop_s=0.5)
    windows = _run(w, events)
    assert _starts(windows) == [x / 2 for x in range(11)]           # 0.0 .. 5.0: nothing dropped
    # windows with a step centre in [2 + max_age, 3) have no fresh frame
    degraded = {1.5, 2.0, 2.5}
    for start, win in zip(_starts(windows), windows):
        _assert_audio_exact(win, signal)
        if start in degraded:
            assert win.frames is None and win.flags == {FLAG_MISSING_IMAGE}, start
        else:
            assert win.flags == set() and len(win.frames) == CFG.timesteps, start
    assert w.counters['windows_flagged_missing_image'] == 3
    assert w.counters['missing_visual'] == w.counters['windows_dropped'] == 0


@pytest.mark.parametrize('timeout_s', [1.5, 0.5])
def test_unplugged_camera_windows_follow_audio_after_the_stall_timeout(timeout_s):
    """The camera stops for good at 2 s: a window is given up on video once audio runs modality_timeout_s
    past its end, and is then classified from audio; none waits longer than that."""
    signal = _signal(6)
    events = [e for e in _events(signal) if not (e[1] == 'v' and e[0] >= T0 + 2 * NS_PER_S)]
    w = AudioVisualWindower(CFG, hop_s=0.5, modality_timeout_s=timeout_s)
    windows = _run(w, events)
    # audio ends at 6 s: a window starting at s is decided once 6 > s + 1 + timeout
    expected = [x / 2 for x in range(12) if x / 2 + 1 + timeout_s < 6]
    assert _starts(windows) == expected
    for start, win in zip(_starts(windows), windows):
        _assert_audio_exact(win, signal)
        assert win.flags == (set() if start <= 1.0 else {FLAG_MISSING_IMAGE}), start
        assert (win.frames is None) == (start > 1.0)
    assert w.counters['windows_dropped'] == 0


def test_camera_absent_from_start_windows_follow_audio():
    """No frame ever: the grid starts from audio once it ran a window plus the stall timeout alone."""
    signal = _signal(5)
    events = [e for e in _events(signal) if e[1] == 'a']
    w = AudioVisualWindower(CFG, hop_s=0.5)            # modality_timeout_s 1.5
    windows = _run(w, events)
    assert _starts(windows) == [0.0, 0.5, 1.0, 1.5, 2.0]
    for win in windows:
        _assert_audio_exact(win, signal)
        assert win.frames is None and win.flags == {FLAG_MISSING_IMAGE}


def test_microphone_stall_windows_are_classified_from_video_and_flagged():
    """The microphone is silent for 4 s (longer than max_buffer_s: its return is a clock jump of the audio
    stream): the windows it misses are cut from video (audio None, flag missing_audio), none is dropped,
    and audio windows resume on the same grid."""
    signal = _signal(8)
    events = [e for e in _events(signal)
              if not (e[1] == 'a' and T0 + 2 * NS_PER_S <= e[0] < T0 + 6 * NS_PER_S)]  # mic silent 4 s
    w = AudioVisualWindower(CFG, hop_s=0.5, max_buffer_s=3.0)
    windows = _run(w, events)
    assert _starts(windows) == [x / 2 for x in range(15)]           # 0.0 .. 7.0
    for start, win in zip(_starts(windows), windows):
        assert [int(f[0, 0]) for f in win.frames] == [i % 256 for i in _expected_frame_ids(win.start_ns)]
        # a window any part of whose audio is gone (1.5 .. 5.5) is classified without audio
        if 1.5 <= start <= 5.5:
            assert win.audio is None and win.flags == {FLAG_MISSING_AUDIO}, start
        else:
            _assert_audio_exact(win, signal)
            assert win.flags == set(), start
    assert w.counters['windows_flagged_missing_audio'] == 9
    assert w.counters['clock_jump_audio'] == 1
    assert w.counters['missing_audio'] == w.counters['windows_dropped'] == 0


def test_window_lacking_both_senses_is_dropped_and_counted():
    """A lost chunk under gap_policy drop and a camera pause in the same windows: nothing to classify."""
    signal = _signal(4)
    lost = T0 + 1_500_000_000
    events = [e for e in _events(signal) if not (e[1] == 'a' and e[0] == lost)
              and not (e[1] == 'v' and T0 + 1_400_000_000 <= e[0] < T0 + 1_900_000_000)]
    w = AudioVisualWindower(CFG, hop_s=0.5, gap_policy='drop')
    windows = _run(w, events)
    assert _starts(windows) == [0.0, 0.5, 2.0, 2.5, 3.0]
    assert all(x.flags == set() for x in windows)
    assert w.counters['windows_dropped'] == w.counters['missing_visual'] == w.counters['audio_gap'] == 2


def test_audio_only_windows_slide_over_audio_alone():
    """A windower for an audio-only model never waits for frames: each window is cut the moment its last
    audio sample arrives, with frames None and no missing_image flag; frames pushed by mistake are
    counted and ignored."""
    signal = _signal(4)
    w = AudioVisualWindower(CFG, hop_s=0.5, modalities=('audio',))
    cut_at = {}                                   # window start -> end of the chunk that completed it
    for stamp, kind, payload in _events(signal):
        if kind == 'a':
            w.push_audio(stamp, payload, SR)
        else:
            w.push_frame(stamp, _frame(payload))
        for win in w.pop_ready():
            cut_at[win.start_ns] = stamp + CHUNK * NS_PER_S // SR
            _assert_audio_exact(win, signal)
            assert win.frames is None and win.flags == set()
    assert sorted(cut_at) == [T0 + k * NS_PER_S // 2 for k in range(7)]
    assert all(end == start + NS_PER_S for start, end in cut_at.items())
    assert w.counters['frame_unused'] == 4 * FPS and w.buffered_frames == 0


def test_audio_only_windows_content_and_flags():
    signal = _signal(4)
    w = AudioVisualWindower(CFG, hop_s=0.5, modalities=('audio',), modality_timeout_s=100.0)  # unused
    windows = _run(w, [e for e in _events(signal) if e[1] == 'a'])
    assert _starts(windows) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    for win in windows:
        _assert_audio_exact(win, signal)
        assert win.frames is None and win.flags == set()


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


def test_gap_drop_policy_and_large_gap_classify_from_video():
    """Audio the gap policy rejects makes the window lack audio: it is classified from video (flag
    missing_audio) with both senses in use, and dropped (audio_gap) for an audio-only model."""
    signal = _signal(4)
    lost = T0 + 1_500_000_000
    drop_one = [e for e in _events(signal) if not (e[1] == 'a' and e[0] == lost)]
    # zero-fill, but 0.2 s missing > max_gap_s = 0.1 s
    drop_200ms = [e for e in _events(signal) if not (e[1] == 'a' and lost <= e[0] < lost + 200_000_000)]
    for events, kwargs in ((drop_one, dict(gap_policy='drop')), (drop_200ms, dict(max_gap_s=0.1))):
        w = AudioVisualWindower(CFG, hop_s=0.5, **kwargs)
        windows = _run(w, events)
        assert _starts(windows) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
        for start, win in zip(_starts(windows), windows):
            if start in (1.0, 1.5):
                assert win.audio is None and win.flags == {FLAG_MISSING_AUDIO}, start
                assert [int(f[0, 0]) for f in win.frames] == [i % 256 for i in _expected_frame_ids(win.start_ns)]
            else:
                _assert_audio_exact(win, signal)
                assert win.flags == set()
        assert w.counters['audio_gap'] == w.counters['windows_dropped'] == 0
        w = AudioVisualWindower(CFG, hop_s=0.5, modalities=('audio',), **kwargs)
        assert _starts(_run(w, events)) == [0.0, 0.5, 2.0, 2.5, 3.0]
        assert w.counters['audio_gap'] == w.counters['windows_dropped'] == 2


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
    """60 s of input whose video stamps lag audio by 10 s, beyond max_buffer_s."""
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
    # the camera is hopelessly late (its stamps keep jumping, frames too old on arrival): every window
    # formed comes from audio alone
    assert w.counters['frame_late'] > 0
    assert w.counters['windows_formed'] == w.counters['windows_flagged_missing_image'] > 0


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
    dict(modality_timeout_s=0.0), dict(modality_timeout_s=float('nan')),
    dict(modality_timeout_s=1.8),            # > max_buffer_s 3 - W 1 - step 0.25: the window would expire first
])
def test_bad_params_raise_value_error_naming_the_setting(bad):
    key = next(iter(bad))
    with pytest.raises(ValueError, match=key):
        AudioVisualWindower(CFG, **bad)


def test_modality_timeout_bound_only_applies_with_two_senses():
    AudioVisualWindower(CFG, modality_timeout_s=1.75)
    AudioVisualWindower(CFG, modality_timeout_s=1.8, modalities=('audio',))
    with pytest.raises(ValueError, match='modalities'):
        AudioVisualWindower(CFG, modalities=('smell',))


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
    nanosecond older: the window is classified without the image (flag missing_image), never with a
    stale frame. (Every other step has a frame at its centre, and a frame after the window lets the
    windower decide.)"""
    age_ns = int(round(age_s * NS_PER_S))
    later = CENTRES_NS[1:] + [T0 + NS_PER_S]
    windows, w = _window_with_frames([CENTRES_NS[0] - age_ns] + later, max_frame_age_s=age_s)
    assert [x.start_ns for x in windows] == [T0]
    assert [int(f[0, 0]) for f in windows[0].frames] == [0, 1, 2, 3]
    windows, w = _window_with_frames([CENTRES_NS[0] - age_ns - 1] + later, max_frame_age_s=age_s)
    assert [(x.start_ns, x.frames, x.flags) for x in windows] == [(T0, None, {FLAG_MISSING_IMAGE})]
    assert w.counters['windows_dropped'] == 0


def test_default_max_frame_age_is_200_ms():
    """docs/runtime.md documents 0.2 s; the default must hold that exact limit, not just a nearby one."""
    assert WindowParams().max_frame_age_s == 0.2
    later = CENTRES_NS[1:] + [T0 + NS_PER_S]
    windows, _ = _window_with_frames([CENTRES_NS[0] - 200_000_000] + later)
    assert len(windows) == 1
    windows, w = _window_with_frames([CENTRES_NS[0] - 200_000_001] + later)
    assert [(x.frames, x.flags) for x in windows] == [(None, {FLAG_MISSING_IMAGE})]


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
