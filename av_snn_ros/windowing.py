"""Cut timestamped camera frames and audio chunks into synchronised sliding windows (ROS-free).

Time is integer nanoseconds taken from the message headers (sensor time), never a clock read here.

Grid
    Window starts lie on a global grid of multiples of ``hop`` (in stamp time), so the windows of a stream
    are the same after a restart, and a recording whose samples start on whole hops has windows aligned to
    them. A window is ``[start, start + W)`` with ``W = cfg.window_s``; timestep ``k`` is sampled by the
    newest camera frame whose stamp is ``<=`` the step centre ``start + (k + 0.5) * W / T``.

Completeness
    A window is emitted as soon as every sense it uses covers it: audio samples for the whole span (plus
    a few samples of context when the stream must be resampled), and for every timestep a frame no older
    than ``max_frame_age_s`` at the step centre.

Degrade, don't stop
    With both senses in use, a window is classified from one sense when the other one cannot cover it
    (the window's :attr:`Window.audio` or :attr:`Window.frames` is then None, flagged ``missing_audio``
    / ``missing_image``):

    - *stalled*: the sense has no data up to the window's need while the other stream has run more than
      ``modality_timeout_s`` past the window's end (a camera stalled or unplugged, a microphone gone);
    - *gone*: a timestep without a fresh frame although later frames exist (the camera paused inside
      the window), audio no longer held, or an audio hole the gap policy rejects (see below);
    - the window waited ``max_buffer_s`` (see below).

    A window that lacks both senses is dropped and counted (``missing_audio`` / ``missing_visual`` /
    ``audio_gap``). A windower built for one sense (``modalities=('audio',)``, an audio-only model)
    never waits for, nor flags, the other: its windows slide over that sense alone.

Waiting and bounds
    ``max_buffer_s`` is how much history each stream keeps, measured back from the newest stamp of either
    stream. It is also the longest a window waits for the slower modality: a sense that has not covered
    a window starting before ``newest - max_buffer_s`` is given up for it. Memory is therefore bounded by ``max_buffer_s`` of audio at the
    stream's rate (capped at :data:`MAX_SAMPLE_RATE`), and by the frames that can still be the chosen
    frame of some step centre (frames superseded for every centre are dropped on arrival; a hard cap of
    ``max_buffer_s * MAX_FRAME_RATE_HZ`` frames guards against absurd stamp patterns).

Audio stream
    Chunks are stamped with the capture time of their first sample. The windower trusts sample counts
    between chunks: a chunk whose stamp is within ``gap_tolerance_s`` of where the previous one ended is
    appended as is (stamp jitter is ignored). A later stamp leaves a *gap*, filled with zeros and
    remembered as a hole; a late chunk that lands in a hole repairs it (``audio_reordered``); one that
    overlaps data already held is trimmed (``audio_overlap``) or dropped (``audio_duplicate``).
    A window touching a hole is, by ``gap_policy``, zero-filled and flagged ``audio_gap`` (if at most
    ``max_gap_s`` is missing) or treated as lacking audio (classified from the camera, or dropped).
    Audio is stored at the stream's own rate and resampled to
    ``cfg.sample_rate`` with the shared :func:`~av_snn_ros.preprocessing.resample` when a window is cut
    (resampling whole windows avoids the filter edge effects of resampling 20 ms chunks one by one).
    A sample-rate change converts the held audio to the new rate and flags the windows spanning the
    change ``rate_change``.

Clock jumps
    A stamp more than ``max_buffer_s`` after or more than one window length before a stream's newest data
    is a clock jump (bag loop, simulation reset, clock step, long outage): that stream's buffer is cleared,
    the other stream's buffer is kept only if its newest data is within a window length of the new time,
    and the window grid restarts (an outage of one stream keeps the grid, so the windows it missed are
    classified from the other stream). Nothing here raises on bad timing; every anomaly increments a counter in
    :attr:`AudioVisualWindower.counters`.
"""
from __future__ import annotations

import bisect
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .preprocessing import PreprocessConfig, resample

NS_PER_S = 1_000_000_000
#: highest audio rate accepted (bounds the audio buffer's memory).
MAX_SAMPLE_RATE = 384_000
#: frame-count cap per second of buffer; far above any camera, only guards the memory bound.
MAX_FRAME_RATE_HZ = 240
#: resampling context on each side of a window, in units of the polyphase filter's half length.
_RESAMPLE_CONTEXT_FACTOR = 1.5
#: scipy's resample_poly filter half length is 10 * max(up, down) taps at the upsampled rate.
_RESAMPLE_HALF_TAPS_PER_FACTOR = 10

GAP_POLICIES = ('zero_fill', 'drop')

# Window flags (also published in Classification.flags).
FLAG_AUDIO_GAP = 'audio_gap'
FLAG_RATE_CHANGE = 'rate_change'
FLAG_MISSING_AUDIO = 'missing_audio'
FLAG_MISSING_IMAGE = 'missing_image'

#: the senses a windower can cut (names as in a model card's ``modalities``)
AUDIO, VISUAL = 'audio', 'visual'
BOTH = (AUDIO, VISUAL)

# per-window state of one sense while pop_ready decides
# (_GAP: held, but the gap policy rejects its holes; _OFF: a sense the windower does not use)
_READY, _WAIT, _GONE, _GAP, _OFF = 'ready', 'wait', 'gone', 'gap', 'off'


@dataclass(frozen=True)
class WindowParams:
    """Windowing settings that are not part of the model's preprocessing (those come from the card)."""

    hop_s: float = 0.5               # distance between window starts
    max_frame_age_s: float = 0.2     # oldest a frame may be at its step centre
    gap_policy: str = 'zero_fill'    # audio holes: 'zero_fill' (<= max_gap_s missing) or 'drop'
    max_gap_s: float = 0.1           # most missing audio a zero-filled window may have
    gap_tolerance_s: float = 0.01    # chunk stamp jitter treated as continuous audio
    max_buffer_s: float = 3.0        # history kept per stream = longest wait for the slower modality
    modality_timeout_s: float = 1.5  # a sense this far behind the other is stalled: classify without it

    def validate(self, cfg: PreprocessConfig, modalities: tuple[str, ...] = BOTH) -> None:
        """Raise ``ValueError`` naming the offending setting if these params cannot work with ``cfg``."""
        if not (self.hop_s > 0 and math.isfinite(self.hop_s)):
            raise ValueError(f'window.hop_s must be > 0, got {self.hop_s}')
        if not self.max_frame_age_s > 0:
            raise ValueError(f'window.max_frame_age_s must be > 0, got {self.max_frame_age_s}')
        if self.gap_policy not in GAP_POLICIES:
            raise ValueError(f'window.gap_policy must be one of {", ".join(GAP_POLICIES)}, '
                             f'got {self.gap_policy!r}')
        if not 0 <= self.max_gap_s <= cfg.window_s:
            raise ValueError(f'window.max_gap_s must be in [0, window length {cfg.window_s} s], '
                             f'got {self.max_gap_s}')
        if not self.gap_tolerance_s >= 0:
            raise ValueError(f'window.gap_tolerance_s must be >= 0, got {self.gap_tolerance_s}')
        min_buffer = cfg.window_s + cfg.step_s
        if not self.max_buffer_s >= min_buffer:
            raise ValueError(f'window.max_buffer_s must be >= window length + one timestep '
                             f'({min_buffer:g} s), got {self.max_buffer_s}')
        if self.gap_tolerance_s >= self.max_buffer_s:
            raise ValueError('window.gap_tolerance_s must be smaller than window.max_buffer_s')
        if not (self.modality_timeout_s > 0 and math.isfinite(self.modality_timeout_s)):
            raise ValueError(f'window.modality_timeout_s must be > 0, got {self.modality_timeout_s}')
        # a stalled sense must be given up while the window's other sense is still buffered (a window
        # expires max_buffer_s after its start); one step of margin for message spacing
        longest = self.max_buffer_s - cfg.window_s - cfg.step_s
        if set(BOTH) <= set(modalities) and self.modality_timeout_s > longest:
            raise ValueError(f'window.modality_timeout_s must be <= window.max_buffer_s - window length - one '
                             f'timestep ({longest:g} s), got {self.modality_timeout_s}: lower it or raise '
                             f'window.max_buffer_s')


@dataclass
class Window:
    """One synchronised window: ``audio`` is exactly ``cfg.window_samples`` float32 samples at
    ``cfg.sample_rate`` covering ``[start_ns, end_ns)``; ``frames`` holds one uint8 frame per timestep
    (the same array object repeats when one frame serves several steps). A sense the window lacks
    (stalled, or not used by the model) is None: :func:`~av_snn_ros.preprocessing.preprocess_window`
    feeds the model's missing-sense input for it."""

    start_ns: int
    end_ns: int
    audio: np.ndarray | None
    frames: list[np.ndarray] | None
    flags: set[str] = field(default_factory=set)


def _s_to_ns(seconds: float) -> int:
    return int(round(seconds * NS_PER_S))


class _AudioBuffer:
    """Mono samples at one rate on a sample-count timeline anchored at ``t0_ns`` (absolute index 0).

    Absolute index ``i`` has stamp ``t0_ns + i * 1e9 / rate``. ``data[:n]`` holds indices
    ``[base, base + n)``; ``holes`` are zero-filled index ranges whose audio never arrived.
    """

    def __init__(self, t0_ns: int, rate: int, capacity: int) -> None:
        self.t0_ns = t0_ns
        self.rate = rate
        self.base = 0
        self.n = 0
        self.data = np.zeros(max(capacity, 1), dtype=np.float32)
        self.holes: list[list[int]] = []
        self.rate_marks: list[int] = []

    @property
    def end(self) -> int:
        return self.base + self.n

    def time_of(self, index: int) -> int:
        return self.t0_ns + (index * NS_PER_S) // self.rate

    def index_of(self, stamp_ns: int) -> int:
        """Nearest absolute sample index of ``stamp_ns``."""
        return ((stamp_ns - self.t0_ns) * self.rate + NS_PER_S // 2) // NS_PER_S

    def _reserve(self, extra: int) -> None:
        need = self.n + extra
        if need > len(self.data):
            grown = np.zeros(max(need, 2 * len(self.data)), dtype=np.float32)
            grown[:self.n] = self.data[:self.n]
            self.data = grown

    def append(self, samples: np.ndarray) -> None:
        self._reserve(len(samples))
        self.data[self.n:self.n + len(samples)] = samples
        self.n += len(samples)

    def append_hole(self, count: int) -> None:
        self._reserve(count)
        self.data[self.n:self.n + count] = 0.0
        self.holes.append([self.end, self.end + count])
        self.n += count

    def fill_holes(self, start: int, samples: np.ndarray) -> int:
        """Copy the parts of ``samples`` (starting at absolute ``start``) that fall into holes."""
        filled = 0
        stop = start + len(samples)
        new_holes: list[list[int]] = []
        for a, b in self.holes:
            lo, hi = max(a, start), min(b, stop)
            if lo >= hi:
                new_holes.append([a, b])
                continue
            self.data[lo - self.base:hi - self.base] = samples[lo - start:hi - start]
            filled += hi - lo
            if a < lo:
                new_holes.append([a, lo])
            if hi < b:
                new_holes.append([hi, b])
        self.holes = new_holes
        return filled

    def trim_before(self, index: int) -> None:
        """Forget samples before absolute ``index`` (the buffer's memory bound)."""
        drop = min(max(0, index - self.base), self.n)
        if drop == 0:
            return
        self.data[:self.n - drop] = self.data[drop:self.n]
        self.n -= drop
        self.base += drop
        self.holes = [[max(a, self.base), b] for a, b in self.holes if b > self.base]
        self.rate_marks = [m for m in self.rate_marks if m >= self.base]
        # Shrink after an outlier burst so a long-lived node does not keep its peak allocation.
        if len(self.data) > 4 * max(self.n, 1) and len(self.data) > 1 << 16:
            self.data = self.data[:max(2 * self.n, 1)].copy()

    def change_rate(self, new_rate: int) -> None:
        """Convert the held audio to ``new_rate`` (same timeline, indices rescaled)."""
        old = self.rate
        scale = new_rate / old
        converted = resample(self.data[:self.n], old, new_rate) if self.n else np.zeros(0, np.float32)
        self.rate = new_rate
        self.base = int(round(self.base * scale))
        self.n = len(converted)
        self.data = np.zeros(max(self.n * 2, 1), dtype=np.float32)
        self.data[:self.n] = converted
        self.holes = [[int(round(a * scale)), int(round(b * scale))] for a, b in self.holes]
        self.rate_marks = [int(round(m * scale)) for m in self.rate_marks]

    def hole_samples(self, start: int, stop: int) -> int:
        return sum(max(0, min(b, stop) - max(a, start)) for a, b in self.holes)

    def has_mark(self, start: int, stop: int) -> bool:
        return any(start <= m <= stop for m in self.rate_marks)

    def view(self, start: int, stop: int) -> np.ndarray:
        return self.data[start - self.base:stop - self.base]


class AudioVisualWindower:
    """Turns pushed frames and audio chunks into :class:`Window` s; see the module docstring.

    Not thread-safe: call it from one thread (or under one lock).
    """

    def __init__(self, cfg: PreprocessConfig, hop_s: float = WindowParams.hop_s,
                 max_buffer_s: float = WindowParams.max_buffer_s,
                 max_frame_age_s: float = WindowParams.max_frame_age_s,
                 gap_policy: str = WindowParams.gap_policy,
                 max_gap_s: float = WindowParams.max_gap_s,
                 gap_tolerance_s: float = WindowParams.gap_tolerance_s,
                 modality_timeout_s: float = WindowParams.modality_timeout_s,
                 modalities: tuple[str, ...] = BOTH) -> None:
        modalities = tuple(modalities)
        if not modalities or not set(modalities) <= set(BOTH):
            raise ValueError(f'modalities must be a non-empty subset of {BOTH}, got {modalities}')
        params = WindowParams(hop_s=hop_s, max_frame_age_s=max_frame_age_s, gap_policy=gap_policy,
                              max_gap_s=max_gap_s, gap_tolerance_s=gap_tolerance_s,
                              max_buffer_s=max_buffer_s, modality_timeout_s=modality_timeout_s)
        params.validate(cfg, modalities)
        self.cfg = cfg
        self.params = params
        self.uses_audio = AUDIO in modalities
        self.uses_visual = VISUAL in modalities
        self.modality_timeout_ns = _s_to_ns(modality_timeout_s)
        self.window_ns = _s_to_ns(cfg.window_s)
        self.hop_ns = _s_to_ns(hop_s)
        self.max_buffer_ns = _s_to_ns(max_buffer_s)
        self.max_frame_age_ns = _s_to_ns(max_frame_age_s)
        self.gap_tolerance_ns = _s_to_ns(gap_tolerance_s)
        self.centres_ns = [_s_to_ns(c) for c in cfg.step_centers_s()]
        self.max_gap_samples = int(round(max_gap_s * cfg.sample_rate))
        self.max_frames = max(int(math.ceil(max_buffer_s * MAX_FRAME_RATE_HZ)), cfg.timesteps + 1)
        #: event and drop counters (see docs/runtime.md for each key)
        self.counters: Counter[str] = Counter()
        self._audio: _AudioBuffer | None = None
        self._frame_stamps: list[int] = []
        self._frames: list[np.ndarray] = []
        self._newest_frame_ns: int | None = None
        self._cursor: int | None = None

    @classmethod
    def from_params(cls, cfg: PreprocessConfig, params: WindowParams,
                    modalities: tuple[str, ...] = BOTH) -> 'AudioVisualWindower':
        return cls(cfg, hop_s=params.hop_s, max_buffer_s=params.max_buffer_s,
                   max_frame_age_s=params.max_frame_age_s, gap_policy=params.gap_policy,
                   max_gap_s=params.max_gap_s, gap_tolerance_s=params.gap_tolerance_s,
                   modality_timeout_s=params.modality_timeout_s, modalities=modalities)

    # ------------------------------------------------------------------------------------------ state

    @property
    def newest_audio_ns(self) -> int | None:
        """Stamp just past the newest audio sample held (None before any audio)."""
        return None if self._audio is None else self._audio.time_of(self._audio.end)

    @property
    def newest_frame_ns(self) -> int | None:
        return self._newest_frame_ns

    @property
    def buffered_frames(self) -> int:
        return len(self._frames)

    @property
    def buffered_audio_s(self) -> float:
        return 0.0 if self._audio is None else self._audio.n / self._audio.rate

    def stream_skew_s(self) -> float | None:
        """Newest frame stamp minus newest audio stamp (how far video runs ahead of audio)."""
        a, f = self.newest_audio_ns, self._newest_frame_ns
        return None if a is None or f is None else (f - a) / NS_PER_S

    def reset(self) -> None:
        """Forget all buffered data (counters are kept)."""
        self._audio = None
        self._clear_frames()
        self._cursor = None

    def _clear_frames(self) -> None:
        self._frame_stamps.clear()
        self._frames.clear()
        self._newest_frame_ns = None

    def _near(self, stamp_ns: int, reference_ns: int | None) -> bool:
        return reference_ns is not None and abs(stamp_ns - reference_ns) <= self.window_ns

    def _is_jump(self, stamp_ns: int, newest_ns: int) -> bool:
        """Forward beyond the buffer (clock step or outage) or backward by more than a window (a late
        message that old is useless; a bag loop or simulation reset jumps back by at least that)."""
        return stamp_ns > newest_ns + self.max_buffer_ns or stamp_ns < newest_ns - self.window_ns

    def _clock_jump(self, stream: str, stamp_ns: int) -> None:
        """Stream ``stream`` jumped to ``stamp_ns``: clear it, keep the other one only if consistent."""
        self.counters[f'clock_jump_{stream}'] += 1
        if stream == 'audio':
            self._audio = None
            other_kept = self._near(stamp_ns, self._newest_frame_ns)
            if not other_kept:
                self._clear_frames()
        else:
            self._clear_frames()
            other_kept = self._near(stamp_ns, self.newest_audio_ns)
            if not other_kept:
                self._audio = None
        # A forward jump of one stream while the other runs on is an outage of that stream: keep the
        # grid position so the windows it missed are counted as missing. Otherwise restart the grid.
        if not (other_kept and self._cursor is not None and self._cursor <= stamp_ns):
            self._cursor = None

    # ------------------------------------------------------------------------------------------ audio

    def push_audio(self, stamp_ns: int, samples: np.ndarray, sample_rate: int) -> None:
        """Add a mono float32 chunk whose first sample was captured at ``stamp_ns``.

        Raises ``ValueError`` only for a malformed call (not 1-D, non-finite, bad rate); timing
        anomalies are handled and counted.
        """
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f'audio chunk must be 1-D mono, got shape {samples.shape}')
        if not 0 < int(sample_rate) <= MAX_SAMPLE_RATE:
            raise ValueError(f'sample rate must be in (0, {MAX_SAMPLE_RATE}], got {sample_rate}')
        if not np.isfinite(samples).all():
            raise ValueError('audio chunk contains NaN or Inf')
        sample_rate = int(sample_rate)
        stamp_ns = int(stamp_ns)
        if len(samples) == 0:
            return
        if not self.uses_audio:
            self.counters['audio_unused'] += 1     # the model takes no audio
            return
        self.counters['audio_chunks'] += 1
        buf = self._audio
        if buf is not None:
            if self._is_jump(stamp_ns, buf.time_of(buf.end)):
                self._clock_jump('audio', stamp_ns)
                buf = None
        if buf is None:
            capacity = int(math.ceil(self.params.max_buffer_s * sample_rate)) + 2 * len(samples)
            buf = self._audio = _AudioBuffer(stamp_ns, sample_rate, capacity)
            buf.append(samples)
            self._trim()
            return
        if sample_rate != buf.rate:
            self.counters['rate_change_events'] += 1
            buf.change_rate(sample_rate)
            buf.rate_marks.append(buf.index_of(stamp_ns))
        tol = (self.gap_tolerance_ns * buf.rate) // NS_PER_S
        idx = buf.index_of(stamp_ns)
        if abs(idx - buf.end) <= tol:
            buf.append(samples)                       # continuous (stamp jitter ignored)
        elif idx > buf.end:
            self.counters['audio_gap_events'] += 1
            buf.append_hole(idx - buf.end)
            buf.append(samples)
        else:
            self._late_audio(buf, idx, samples)
        self._trim()

    def _late_audio(self, buf: _AudioBuffer, idx: int, samples: np.ndarray) -> None:
        """A chunk starting before the buffer's end: repair holes, append any new tail."""
        stop = idx + len(samples)
        inner_start, inner_stop = max(idx, buf.base), min(stop, buf.end)
        filled = 0
        if inner_start < inner_stop:
            filled = buf.fill_holes(inner_start, samples[inner_start - idx:inner_stop - idx])
        if stop > buf.end:
            buf.append(samples[buf.end - idx:])
            self.counters['audio_overlap'] += 1
        elif filled:
            self.counters['audio_reordered'] += 1
        else:
            self.counters['audio_duplicate'] += 1

    # ------------------------------------------------------------------------------------------ frames

    def _needed(self, stamp_ns: int, next_stamp_ns: int) -> bool:
        """Whether a frame at ``stamp_ns`` followed by one at ``next_stamp_ns`` is the newest frame
        at or before some step centre of the grid (otherwise the next frame supersedes it everywhere)."""
        for c in self.centres_ns:
            # smallest grid centre k * hop + c that is >= stamp_ns
            k = -((c - stamp_ns) // self.hop_ns)          # ceil((stamp - c) / hop)
            if k * self.hop_ns + c < next_stamp_ns:
                return True
        return False

    def push_frame(self, stamp_ns: int, frame: np.ndarray) -> None:
        """Add a uint8 camera frame (HxW gray or HxWx3 RGB) captured at ``stamp_ns``."""
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim not in (2, 3) or (
                frame.ndim == 3 and frame.shape[2] not in (1, 3)):
            raise ValueError(f'frame must be uint8 HxW or HxWx{{1,3}}, got {frame.dtype} {frame.shape}')
        stamp_ns = int(stamp_ns)
        if not self.uses_visual:
            self.counters['frame_unused'] += 1     # the model takes no images (audio-only card)
            return
        self.counters['frames'] += 1
        newest = self._newest_frame_ns
        if newest is not None and self._is_jump(stamp_ns, newest):
            self._clock_jump('frames', stamp_ns)
            newest = None
        stamps = self._frame_stamps
        pos = bisect.bisect_left(stamps, stamp_ns)
        if pos < len(stamps) and stamps[pos] == stamp_ns:
            self.counters['frame_duplicate'] += 1
            return
        if stamp_ns < self._frame_floor_ns():
            self.counters['frame_late'] += 1
            return
        if pos < len(stamps) and not self._needed(stamp_ns, stamps[pos]):
            self.counters['frame_superseded'] += 1    # a late frame that a newer one already beats
            return
        stamps.insert(pos, stamp_ns)
        self._frames.insert(pos, frame)
        if pos > 0 and not self._needed(stamps[pos - 1], stamp_ns):
            del stamps[pos - 1]                       # the new frame supersedes the previous one
            del self._frames[pos - 1]
        if newest is None or stamp_ns > newest:
            self._newest_frame_ns = stamp_ns
        if len(stamps) > self.max_frames:
            self.counters['frame_overflow'] += len(stamps) - self.max_frames
            del stamps[:len(stamps) - self.max_frames]
            del self._frames[:len(self._frames) - self.max_frames]
        self._trim()

    def _frame_floor_ns(self) -> int:
        """Frames older than this can no longer serve any undecided window."""
        if self._cursor is not None:
            return self._cursor + self.centres_ns[0] - self.max_frame_age_ns
        newest = self._newest_any()
        return newest - self.max_buffer_ns if newest is not None else -(1 << 62)

    # ------------------------------------------------------------------------------------------ windows

    def _newest_any(self) -> int | None:
        values = [v for v in (self.newest_audio_ns, self._newest_frame_ns) if v is not None]
        return max(values) if values else None

    def _trim(self) -> None:
        newest = self._newest_any()
        if newest is None:
            return
        horizon = newest - self.max_buffer_ns
        if self._audio is not None:
            keep_from = horizon
            if self._cursor is not None:
                keep_from = max(horizon, min(self._cursor, newest))
            self._audio.trim_before(self._audio.index_of(keep_from) - self._context(self._audio.rate))
        # A frame older than the floor is too old for the first undecided step centre, hence for all.
        cut = bisect.bisect_left(self._frame_stamps, self._frame_floor_ns())
        if cut > 0:
            del self._frame_stamps[:cut]
            del self._frames[:cut]

    def _context(self, rate: int) -> int:
        """Native samples of resampling context needed on each side of a window (0 at the model rate)."""
        if rate == self.cfg.sample_rate:
            return 0
        g = math.gcd(rate, self.cfg.sample_rate)
        up, down = self.cfg.sample_rate // g, rate // g
        half_taps = _RESAMPLE_HALF_TAPS_PER_FACTOR * max(up, down)
        return int(math.ceil(_RESAMPLE_CONTEXT_FACTOR * half_taps / up)) + 1

    def _init_cursor(self) -> bool:
        """Start the grid once every used sense has data, or once one has run ``window + modality_timeout``
        alone (the other is stalled from the start)."""
        spans = []                                   # (oldest usable window start, newest stamp) per sense
        if self.uses_audio and self._audio is not None:
            spans.append((self._audio.time_of(self._audio.base), self.newest_audio_ns))
        if self.uses_visual and self._frame_stamps:
            spans.append((self._frame_stamps[0] - self.centres_ns[0], self._newest_frame_ns))
        if not spans:
            return False
        if len(spans) < self.uses_audio + self.uses_visual:
            oldest, newest = spans[0]
            if newest - oldest <= self.window_ns + self.modality_timeout_ns:
                return False                         # the other sense may still be starting
        earliest = max(max(oldest for oldest, _ in spans), self._newest_any() - self.max_buffer_ns)
        self._cursor = -((-earliest) // self.hop_ns) * self.hop_ns     # ceil to the hop grid
        return True

    def _audio_stop(self, buf: _AudioBuffer, start: int, end: int) -> int:
        """Absolute index the buffer must reach before the window ``[start, end)`` can be cut."""
        if buf.rate == self.cfg.sample_rate:
            return buf.index_of(start) + self.cfg.window_samples
        return buf.index_of(end) + self._context(buf.rate)

    def _hole_samples(self, buf: _AudioBuffer, start: int, end: int) -> int:
        """Samples of ``[start, end)`` that never arrived (zero-filled), counted at ``cfg.sample_rate``."""
        holes = buf.hole_samples(buf.index_of(start), buf.index_of(end))
        if buf.rate != self.cfg.sample_rate:
            holes = int(round(holes * self.cfg.sample_rate / buf.rate))
        return holes

    def _audio_state(self, start: int, end: int) -> str:
        """``ready``; ``wait`` while more audio may come; ``gone`` when no longer held or when its holes
        are rejected by the gap policy (counted ``audio_gap`` if the window is dropped)."""
        if not self.uses_audio:
            return _OFF
        buf = self._audio
        if buf is None:
            return _WAIT
        if buf.index_of(start) < buf.base:
            return _GONE
        if buf.end < self._audio_stop(buf, start, end):
            return _WAIT
        holes = self._hole_samples(buf, start, end)
        if holes and (self.params.gap_policy == 'drop' or holes > self.max_gap_samples):
            return _GAP
        return _READY

    def _visual_frames(self, start: int) -> list[np.ndarray] | None | str:
        """Frames per step, ``'wait'`` while later frames may still arrive, ``None`` if stale/missing."""
        last_centre = start + self.centres_ns[-1]
        if self._newest_frame_ns is None or self._newest_frame_ns < last_centre:
            return 'wait'
        frames = []
        for c in self.centres_ns:
            centre = start + c
            j = bisect.bisect_right(self._frame_stamps, centre) - 1
            if j < 0 or centre - self._frame_stamps[j] > self.max_frame_age_ns:
                return None
            frames.append(self._frames[j])
        return frames

    def _cut_audio(self, start: int, end: int) -> tuple[np.ndarray, int, bool]:
        """Window audio at ``cfg.sample_rate``, missing (hole) samples at that rate, rate-change mark."""
        buf = self._audio
        n_out = self.cfg.window_samples
        i0, i1 = buf.index_of(start), buf.index_of(end)
        holes = self._hole_samples(buf, start, end)
        marked = buf.has_mark(i0, i1)
        if buf.rate == self.cfg.sample_rate:
            return buf.view(i0, i0 + n_out).copy(), holes, marked
        ctx = self._context(buf.rate)
        s0 = max(buf.base, i0 - ctx)
        segment = buf.view(s0, min(buf.end, i1 + ctx))
        out = resample(segment, buf.rate, self.cfg.sample_rate)
        offset = int(round((start - buf.time_of(s0)) * self.cfg.sample_rate / NS_PER_S))
        audio = out[offset:offset + n_out]
        if len(audio) < n_out:
            audio = np.pad(audio, (0, n_out - len(audio)))
        return audio.astype(np.float32, copy=True), holes, marked

    def _stalled(self, other_newest_ns: int | None, end: int) -> bool:
        """Whether the other sense ran ``modality_timeout_s`` past the window's end (this one is stalled)."""
        return other_newest_ns is not None and other_newest_ns > end + self.modality_timeout_ns

    def pop_ready(self) -> list[Window]:
        """Every window that can be decided now, oldest first: complete ones, ones classified from one
        sense (the other stalled or gone), and ones lacking both senses (counted and skipped)."""
        ready: list[Window] = []
        if self._cursor is None and not self._init_cursor():
            return ready
        both = self.uses_audio and self.uses_visual
        while True:
            start = self._cursor
            end = start + self.window_ns
            expired = start < self._newest_any() - self.max_buffer_ns
            audio = self._audio_state(start, end)
            if audio == _WAIT and (expired or (both and self._stalled(self._newest_frame_ns, end))):
                audio = _GONE
            frames = self._visual_frames(start) if self.uses_visual else _OFF
            visual = _READY if isinstance(frames, list) else _GONE if frames is None else frames
            if visual == _WAIT and (expired or (both and self._stalled(self.newest_audio_ns, end))):
                visual = _GONE
            if _WAIT in (audio, visual):
                break                                  # wait for more data
            audio_ok, visual_ok = audio in (_READY, _OFF), visual in (_READY, _OFF)
            if (audio_ok or visual_ok) and _READY in (audio, visual):
                ready.append(self._make_window(start, end, audio == _READY, frames if visual == _READY else None))
            else:
                self.counters['windows_dropped'] += 1
                for state, key in ((audio, 'missing_audio'), (visual, 'missing_visual')):
                    if state == _GONE:
                        self.counters[key] += 1
                if audio == _GAP:
                    self.counters['audio_gap'] += 1
                self._cursor = self._next_start_with_data(start + self.hop_ns)
                self._trim()
                continue
            self._cursor = start + self.hop_ns
            self._trim()
        return ready

    def _next_start_with_data(self, start: int) -> int:
        """The first grid start from ``start`` on whose window can hold any buffered data.

        Windows before it hold nothing at all (e.g. after one stream's clock jumped years ahead while
        the grid stayed with the other): stepping through them one hop at a time would take hours, so
        they are skipped at once and counted as ``windows_skipped_empty``.
        """
        earliest = []                                  # earliest window start that can see held data
        if self.uses_audio and self._audio is not None and self._audio.end > self._audio.base:
            earliest.append(self._audio.time_of(self._audio.base) - self.window_ns + 1)
        if self.uses_visual and self._frame_stamps:
            earliest.append(self._frame_stamps[0] - self.centres_ns[-1])
        if not earliest:
            newest = self._newest_any()
            earliest.append(newest - self.max_buffer_ns if newest is not None else start)
        first = -((-min(earliest)) // self.hop_ns) * self.hop_ns        # ceil to the hop grid
        if first <= start:
            return start
        self.counters['windows_skipped_empty'] += (first - start) // self.hop_ns
        return first

    def _make_window(self, start: int, end: int, with_audio: bool, frames: list[np.ndarray] | None) -> Window:
        """The window ``[start, end)``; a used sense that is not given is flagged missing."""
        flags: set[str] = set()
        audio = None
        if with_audio:
            audio, missing, marked = self._cut_audio(start, end)
            if missing:
                flags.add(FLAG_AUDIO_GAP)
            if marked:
                flags.add(FLAG_RATE_CHANGE)
        elif self.uses_audio:
            flags.add(FLAG_MISSING_AUDIO)
        if frames is None and self.uses_visual:
            flags.add(FLAG_MISSING_IMAGE)
        self.counters['windows_formed'] += 1
        for flag in flags:
            self.counters[f'windows_flagged_{flag}'] += 1
        return Window(start_ns=start, end_ns=end, audio=audio, frames=None if frames is None else list(frames),
                      flags=flags)
