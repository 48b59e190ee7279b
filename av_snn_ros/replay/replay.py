"""``av-snn replay``: play a bag through the real node graph over rclpy and score the classifications.

Graph: this process runs a *player* node that publishes every bag message's raw CDR bytes on its
(remapped) topic, paced by bag receive time x ``--rate`` (or as fast as the classifier keeps up), and a
*collector* subscription on ``classification`` and ``/diagnostics``. The classifier is the real
``av_classifier`` lifecycle node, started as its own process with the replay parameter file (reliable
QoS, deep queues) and ``autostart``. The model is never called from here. The whole graph lives in its
own namespace (``/av_snn_replay_<pid>`` unless ``--namespace``), so other nodes on the same ROS domain
(a robot's own classifier, another replay) neither feed the replayed classifier nor reach the collector.

Flow control: the player never runs more than ``--lookahead-s`` of bag time ahead of the newest window
the classifier has published (bounded in-flight data: nothing overflows a queue or the windower's
buffer, so fast replay drops no window). If the classifier publishes nothing for ``stall_timeout_s``
(e.g. it dropped windows), the player moves on and the stall is reported.

Latency (seconds, one per received classification): receive time of the classification in this
process minus the time this process published the last bag message stamped before the window's end
(the message that completed the window), both on this process's monotonic clock. It covers transport
both ways, the node's buffering, preprocessing, inference and publishing, and is independent of the
replay rate.
"""
from __future__ import annotations

import argparse
import bisect
import importlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import bag_io, scoring

CLASSIFICATION_TOPIC = '/classification'
DIAGNOSTICS_TOPIC = '/diagnostics'
CLOCK_TOPIC = '/clock'                # bag time for the classifier (use_sim_time), remapped into the namespace
CLOCK_PERIOD_S = 0.01                 # /clock publish period while bag time runs between messages
NODE_NAME = 'av_classifier'
PLAYER_NODE_NAME = 'av_snn_replay'
# Topics a recorded robot bag may contain that must not be replayed into the graph we score.
SKIPPED_TOPICS = frozenset({CLASSIFICATION_TOPIC, DIAGNOSTICS_TOPIC, '/rosout', '/parameter_events'})
NAMESPACE_PREFIX = '/av_snn_replay_'   # + pid: the replay graph's own namespace (see ReplayOptions)
QUEUE_DEPTH = 1000                    # player/collector history: well above the in-flight bound
DEFAULT_LOOKAHEAD_S = 1.5             # < the windower's max_buffer_s (3 s): in-flight data never expires
DEFAULT_STALL_TIMEOUT_S = 10.0
DEFAULT_STARTUP_TIMEOUT_S = 120.0     # first start loads torch and the model
DEFAULT_DRAIN_TIMEOUT_S = 30.0        # wait for the last classifications after the last message
DIAG_WAIT_S = 3.0                     # wait for a diagnostics report newer than the last message
SHUTDOWN_TIMEOUT_S = 10.0
PARAM_TIMEOUT_S = 10.0
# Node parameters recorded in the report (the replay's lossless settings and the window grid).
REPORTED_PARAMS = ('window.hop_s', 'qos.sensor.reliability', 'qos.sensor.depth', 'inference.queue_size',
                   'backend.name', 'model.card', 'energy.enabled')
POLL_S = 0.05                         # condition-variable wake-up for liveness checks
LOG_TAIL_CHARS = 4000
MAX_PLAYER_SLEEP_S = 0.25             # pacing sleeps in slices so a dead node is noticed


#: exit codes of ``av-snn replay`` / ``av-snn demo``: the replay could not run (one line on stderr), or it
#: ran but its score does not cover the whole bag (reasons in the summary and the report's ``incomplete``)
EXIT_FAILED = 1
EXIT_INCOMPLETE = 3

_REPLAY_IDS = itertools.count()      # replays started by this process (unique default namespaces)


class ReplayError(RuntimeError):
    """The replay could not run (bad bag, node failed to start, ...); the message says why."""


@dataclass
class ReplayOptions:
    bag: Path
    rate: float | None = 1.0                     # None = as fast as the classifier keeps up
    card: Path | None = None
    backend: str | None = None
    params_file: Path | None = None
    remaps: dict[str, str] = field(default_factory=dict)
    lookahead_s: float = DEFAULT_LOOKAHEAD_S
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S
    startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S
    domain_id: int | None = None
    namespace: str | None = None                 # replay graph namespace; None = /av_snn_replay_<pid>_<n>
    node_log: Path | None = None                 # classifier stdout/stderr (default: a temp file)
    ground_truth_topic: str = bag_io.GROUND_TRUTH_TOPIC

    def __post_init__(self) -> None:
        self.bag = Path(self.bag)
        if self.rate is not None and not self.rate > 0:
            raise ValueError(f'rate must be > 0, got {self.rate}')
        if not self.lookahead_s > 0:
            raise ValueError(f'lookahead_s must be > 0, got {self.lookahead_s}')
        if self.namespace is None:
            self.namespace = f'{NAMESPACE_PREFIX}{os.getpid()}_{next(_REPLAY_IDS)}'
        self.namespace = '/' + self.namespace.strip('/') if self.namespace.strip('/') else ''


@dataclass(frozen=True)
class Received:
    """One classification as received (times: this process's monotonic clock, ns)."""

    start_ns: int
    end_ns: int
    class_id: int
    label: str
    confidence: float
    flags: tuple[str, ...]
    received_ns: int
    scores: tuple[float, ...] = ()


def parse_remaps(items: list[str] | None) -> dict[str, str]:
    """``['/from:=/to', ...]`` -> ``{'/from': '/to'}`` (absolute names, as recorded in bags)."""
    remaps = {}
    for item in items or []:
        src, sep, dst = item.partition(':=')
        if not sep or not src or not dst:
            raise ValueError(f'bad remap {item!r}: use /bag_topic:=/graph_topic')
        src, dst = ('/' + src.lstrip('/'), '/' + dst.lstrip('/'))
        remaps[src] = dst
    return remaps


def message_class(msgtype: str):
    """``pkg/msg/Name`` -> the generated rclpy message class."""
    pkg, _, name = msgtype.split('/')
    try:
        return getattr(importlib.import_module(f'{pkg}.msg'), name)
    except (ImportError, AttributeError) as exc:
        raise ReplayError(f'message type {msgtype} is not installed in this Python environment') from exc


#: graph topic -> the message type the classifier subscribes to there
INPUT_TYPES = {bag_io.AUDIO_TOPIC: bag_io.AUDIO_TYPE, bag_io.IMAGE_TOPIC: bag_io.IMAGE_TYPE,
               bag_io.COMPRESSED_IMAGE_TOPIC: bag_io.COMPRESSED_IMAGE_TYPE}


def _check_topics(topics: dict[str, str], remaps: dict[str, str],
                  ground_truth_topic: str = bag_io.GROUND_TRUTH_TOPIC) -> tuple[dict[str, str], dict[str, str]]:
    """Choose what to replay: ``({bag topic: graph topic}, {skipped bag topic: why})``.

    Only the classifier's inputs (after the remaps) and the ground truth are replayed; every other
    topic (a robot bag's ``/tf``, a type not installed here, a recorded ``/classification``) is
    skipped and reported, never a reason to refuse the bag. Raises :class:`ReplayError` when the
    classifier's audio or image input is missing, or the remaps do not fit the bag.
    """
    unknown = sorted(set(remaps) - set(topics))
    if unknown:
        raise ReplayError(f'--remap names topic(s) {unknown} that the bag does not have; bag topics: '
                          f'{_describe(topics)}')
    if len({remaps.get(t, t) for t in topics}) != len(topics):
        raise ReplayError(f'remaps map two bag topics onto one graph topic: {remaps}')
    replayed: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for bag_topic, msgtype in sorted(topics.items()):
        graph = remaps.get(bag_topic, bag_topic)
        if INPUT_TYPES.get(graph) == msgtype or (graph == ground_truth_topic and msgtype == bag_io.LABEL_TYPE):
            replayed[bag_topic] = graph
        elif bag_topic in SKIPPED_TOPICS:
            skipped[bag_topic] = f'{msgtype}: output of the recorded graph, not replayed into the scored one'
        elif graph in INPUT_TYPES or graph == ground_truth_topic:
            expected = INPUT_TYPES.get(graph, bag_io.LABEL_TYPE)
            skipped[bag_topic] = f'{msgtype} on {graph}, where the classifier expects {expected}'
        else:
            skipped[bag_topic] = f'{msgtype}: not an input of the classifier'
    graph_topics = set(replayed.values())
    has_audio = bag_io.AUDIO_TOPIC in graph_topics
    if not (has_audio and graph_topics & {bag_io.IMAGE_TOPIC, bag_io.COMPRESSED_IMAGE_TOPIC}):
        raise ReplayError(
            f'the classifier needs {bag_io.AUDIO_TOPIC} ({bag_io.AUDIO_TYPE}) and {bag_io.IMAGE_TOPIC} '
            f'({bag_io.IMAGE_TYPE}) or {bag_io.COMPRESSED_IMAGE_TOPIC}; the bag has {_describe(topics)}. '
            'Map recorded names with e.g. --remap /camera/image_raw:=/image --remap /mic/audio:=/audio')
    if {bag_io.IMAGE_TOPIC, bag_io.COMPRESSED_IMAGE_TOPIC} <= graph_topics:
        # the node reads one image input (input.compressed); replay decides it from the bag: raw wins
        compressed = next(t for t, g in replayed.items() if g == bag_io.COMPRESSED_IMAGE_TOPIC)
        skipped[compressed] = f'{topics[compressed]}: the bag also has raw images, which the node reads'
        del replayed[compressed]
    return replayed, skipped


def _describe(topics: dict[str, str]) -> str:
    return ', '.join(f'{t} ({m})' for t, m in sorted(topics.items())) or '(none)'


def _node_command(opts: ReplayOptions, card: Path, params_file: Path, compressed: bool) -> list[str]:
    """The classifier node as its own process, running the same code as this process.

    Besides the params file it gets what the replay itself decides: start at once, the scored card, raw
    or compressed image input as the bag holds, and bag time as its clock (``use_sim_time`` on the
    replay's ``/clock``, see :class:`_BagClock`).
    """
    args = ['--ros-args', '--params-file', str(params_file), '-r', f'__ns:={opts.namespace or "/"}',
            '-p', 'autostart:=true', '-p', 'use_sim_time:=true',
            '-p', 'diagnostic_updater.use_fqn:=true',   # see _Collector
            '-p', f'model.card:={card}', '-p', f'input.compressed:={str(compressed).lower()}']
    if opts.namespace:
        # the node's clock follows this replay's bag time, not another replay's (or a robot's) /clock
        args += ['-r', f'{CLOCK_TOPIC}:={opts.namespace}{CLOCK_TOPIC}']
    if opts.backend:
        args += ['-p', f'backend.name:={opts.backend}']
    code = 'import sys; from av_snn_ros.ros.classifier_node import main; sys.exit(main())'
    return [sys.executable, '-c', code, *args]


def namespaced_params_file(params_file: Path, node_fqn: str, out_dir: Path) -> Path:
    """A copy of ``params_file`` whose ``av_classifier`` section applies to the node at ``node_fqn``.

    A params file section named after the node (``av_classifier:`` or ``/av_classifier:``) only matches
    that node in the root namespace; the replay runs it in its own namespace, so the section is renamed
    to the fully qualified name. Wildcard sections (``/**``) are kept as they are.
    """
    import yaml
    try:
        data = yaml.safe_load(params_file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ReplayError(f'cannot read parameter file {params_file}: {exc}') from exc
    if not isinstance(data, dict):
        raise ReplayError(f'{params_file} is not a ROS parameter file (no node sections)')
    renamed = {(node_fqn if key in (NODE_NAME, f'/{NODE_NAME}') else key): value for key, value in data.items()}
    out = out_dir / params_file.name
    out.write_text(yaml.safe_dump(renamed, sort_keys=False))
    return out


def _node_env(opts: ReplayOptions) -> dict[str, str]:
    env = dict(os.environ)
    # the child imports the same av_snn_ros as we do (a source checkout or the install)
    import av_snn_ros
    root = str(Path(av_snn_ros.__file__).resolve().parent.parent)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [root, env.get('PYTHONPATH')]))
    env.setdefault('PYTHONUNBUFFERED', '1')
    if opts.domain_id is not None:
        env['ROS_DOMAIN_ID'] = str(opts.domain_id)
    return env


class _Collector:
    """Thread-safe store of what the graph sends back, with a condition to wait on."""

    def __init__(self, node_fqn: str) -> None:
        self.status_prefix = node_fqn + ':'     # the node's status name with diagnostic_updater.use_fqn
        self.cond = threading.Condition()
        self.received: list[Received] = []
        self.diagnostics: dict[str, dict[str, str]] = {}
        self.diag_received_ns: int | None = None
        self.newest_end_ns: int | None = None
        self.callback: Callable[[Received], None] | None = None

    def on_classification(self, msg) -> None:
        now = time.monotonic_ns()
        item = Received(start_ns=bag_io.stamp_ns(msg.window_start), end_ns=bag_io.stamp_ns(msg.header.stamp),
                        class_id=int(msg.class_id), label=str(msg.label), confidence=float(msg.confidence),
                        flags=tuple(msg.flags), received_ns=now, scores=tuple(float(x) for x in msg.scores))
        with self.cond:
            self.received.append(item)
            if self.newest_end_ns is None or item.end_ns > self.newest_end_ns:
                self.newest_end_ns = item.end_ns
            self.cond.notify_all()
        if self.callback is not None:
            self.callback(item)

    def on_diagnostics(self, msg) -> None:
        now = time.monotonic_ns()
        with self.cond:
            for status in msg.status:
                if status.name.startswith(self.status_prefix):
                    self.diagnostics[status.name] = {
                        'level': int.from_bytes(status.level, 'little') if isinstance(status.level, bytes)
                        else int(status.level),
                        'message': status.message,
                        **{kv.key: kv.value for kv in status.values}}
                    self.diag_received_ns = now
            self.cond.notify_all()


class _BagClock:
    """Publishes bag time on ``/clock`` for the classifier, which runs with ``use_sim_time``.

    So the node's clock reads the recording's time, as under ``ros2 bag play --clock``, and its
    stamp-to-publish latency means something for a bag recorded long ago (against the wall clock it
    read the bag's age, ~1e8 s). The time is the receive time of the message being published; between
    messages it runs on at the replay rate (the player is pacing), it holds while the player waits for
    the classifier (flow control) and, as fast as possible, jumps from message to message. After the
    last message it runs on at the rate (1.0 if as fast as possible), so the node's timers (diagnostics)
    keep firing while the replay drains. It never goes backwards.
    """

    def __init__(self, node, topic: str) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock
        self._pub = node.create_publisher(Clock, topic, QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        self._msg = Clock()
        self._lock = threading.Lock()
        self._bag_ns: int | None = None        # bag time at the anchor
        self._anchor_ns = 0                    # monotonic ns of the anchor
        self._rate: float | None = None        # None: held
        self._last_ns = -1
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name='replay-clock', daemon=True)
        self._thread.start()

    def _now_locked(self) -> int | None:
        if self._bag_ns is None:
            return None
        if self._rate is None:
            return self._bag_ns
        return self._bag_ns + int((time.monotonic_ns() - self._anchor_ns) * self._rate)

    def now_ns(self) -> int | None:
        """The bag time published now (None before the first message)."""
        with self._lock:
            return self._now_locked()

    def set(self, bag_ns: int, rate: float | None) -> None:
        """Move to ``bag_ns`` (not backwards) and run on at ``rate`` (None: hold); publish at once."""
        with self._lock:
            self._bag_ns, self._anchor_ns, self._rate = max(bag_ns, self._last_ns), time.monotonic_ns(), rate
            self._publish_locked()

    def hold(self) -> None:
        with self._lock:
            if self._bag_ns is not None:
                self._bag_ns, self._rate = self._now_locked(), None

    def _publish_locked(self) -> None:
        now = self._now_locked()
        if now is None:
            return
        self._last_ns = now = max(now, self._last_ns)
        self._msg.clock.sec, self._msg.clock.nanosec = divmod(now, bag_io.NS_PER_S)
        self._pub.publish(self._msg)

    def _run(self) -> None:
        while not self._stopped.wait(CLOCK_PERIOD_S):
            with self._lock:
                if self._rate is not None:
                    self._publish_locked()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


class _Player:
    """Publishes bag messages with pacing and flow control; records what it sent when."""

    def __init__(self, node, topic_map: dict[str, str], topics: dict[str, str], collector: _Collector,
                 opts: ReplayOptions) -> None:
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        qos = QoSProfile(depth=QUEUE_DEPTH, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE)
        self.publishers = {bag_topic: node.create_publisher(message_class(topics[bag_topic]), graph, qos)
                           for bag_topic, graph in topic_map.items()}
        self.sensor_topics = {t for t, m in topics.items()
                              if m in (bag_io.IMAGE_TYPE, bag_io.COMPRESSED_IMAGE_TYPE, bag_io.AUDIO_TYPE)}
        self.collector, self.opts = collector, opts
        self.alive: Callable[[], None] = lambda: None     # raises when the classifier died (set by run)
        self.sent_stamps: list[int] = []        # header stamps of sensor messages, publish order
        self.sent_wall: list[int] = []          # monotonic ns of each publish
        self._completion: tuple[list[int], list[int]] | None = None
        self.flow_wait_s = 0.0
        self.stalls = 0
        self._granted_ns = 0
        self.published = 0
        self.stats: bag_io.ReadStats | None = None   # what this pass read / could not decode (set by play)
        self.clock: _BagClock | None = None           # bag time for the node (set by run_replay)

    def _wait_for_window(self, stamp_ns: int, first_stamp_ns: int, window_ns: int) -> None:
        """Block while ``stamp_ns`` is more than the lookahead past the newest classified window.

        After ``stall_timeout_s`` without a new classification (the node dropped windows, or has none
        to publish) the player is granted one more lookahead of bag time and the stall is counted.
        """
        lookahead = int(self.opts.lookahead_s * bag_io.NS_PER_S)
        c = self.collector
        started = time.monotonic()
        last_progress, last_count = started, len(c.received)
        with c.cond:
            while True:
                newest = max(c.newest_end_ns if c.newest_end_ns is not None else first_stamp_ns + window_ns,
                             self._granted_ns)
                if stamp_ns <= newest + lookahead:
                    break
                if len(c.received) != last_count:
                    last_progress, last_count = time.monotonic(), len(c.received)
                if time.monotonic() - last_progress > self.opts.stall_timeout_s:
                    self.stalls += 1
                    self._granted_ns = stamp_ns
                    break
                if self.clock is not None:
                    self.clock.hold()           # bag time stands still while the player waits
                c.cond.wait(POLL_S)
                self.alive()
        self.flow_wait_s += time.monotonic() - started

    def play(self, reader: bag_io.BagReader, window_ns: int) -> None:
        """Publish the replayed topics; what the storage did not deliver or could not be decoded is
        counted in ``self.stats`` (and not published: replay scores the model, not the node's input
        validation)."""
        rate = self.opts.rate
        first_ns = wall0 = first_stamp = None      # pacing follows receive time, flow control sensor time
        paused_ns = 0
        self.stats = stats = reader.read_stats(list(self.publishers))
        for message in reader.messages(list(self.publishers), stats):
            stamp = None
            if message.topic in self.sensor_topics:
                msg = reader.try_decode(message, stats)
                if msg is None:
                    continue
                # sensor time (header stamp), as the node windows by it; a robot's receive time lags it
                stamp = bag_io.stamp_ns(msg.header.stamp)
            if first_ns is None:
                first_ns, wall0 = message.time_ns, time.monotonic_ns()
            if stamp is not None:
                first_stamp = stamp if first_stamp is None else first_stamp
                before = time.monotonic_ns()
                self._wait_for_window(stamp, first_stamp, window_ns)
                paused_ns += time.monotonic_ns() - before      # flow-control waits shift the clock
            if rate is not None:
                target = wall0 + paused_ns + int((message.time_ns - first_ns) / rate)
                while (delay := target - time.monotonic_ns()) > 0:
                    time.sleep(min(delay / bag_io.NS_PER_S, MAX_PLAYER_SLEEP_S))
                    self.alive()
            if self.clock is not None:
                self.clock.set(message.time_ns, rate)       # the node's now() >= this message's time
            self.publishers[message.topic].publish(message.raw)
            self.published += 1
            if stamp is not None:
                self.sent_stamps.append(stamp)
                self.sent_wall.append(time.monotonic_ns())

    def completion_time(self, end_ns: int) -> int | None:
        """When the last sensor message stamped before ``end_ns`` was published (None if none was).

        Streams interleave by receive time, so header stamps need not be sorted in publish order: the
        answer is the latest publish time among all messages stamped before ``end_ns``.
        """
        if self._completion is None or len(self._completion[0]) != len(self.sent_stamps):
            order = sorted(range(len(self.sent_stamps)), key=self.sent_stamps.__getitem__)
            stamps = [self.sent_stamps[i] for i in order]
            latest = list(itertools.accumulate((self.sent_wall[i] for i in order), max))
            self._completion = (stamps, latest)
        stamps, latest = self._completion
        i = bisect.bisect_left(stamps, end_ns) - 1
        return latest[i] if i >= 0 else None


def _with_prefix(values: dict, prefix: str) -> dict:
    """The entries of ``values`` whose key starts with ``prefix``, keyed by the rest of the key."""
    return {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)}


def run_replay(opts: ReplayOptions, on_classification: Callable[[Received], None] | None = None,
               on_ready: Callable[[], None] | None = None) -> dict:
    """Replay ``opts.bag`` through a classifier process; return the JSON-ready report."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions

    from av_snn_msgs.msg import Classification

    from ..model_card import ModelCard
    from ..paths import config_dir, default_model_card

    card_path = Path(opts.card) if opts.card else default_model_card()
    card = ModelCard.load(card_path)
    params_file = Path(opts.params_file) if opts.params_file else config_dir() / 'replay.yaml'
    if not params_file.is_file():
        raise ReplayError(f'parameter file not found: {params_file}')
    window_ns = int(round(card.preprocessing.window_s * bag_io.NS_PER_S))

    with bag_io.BagReader(opts.bag) as reader:
        topics = reader.topics
        topic_map, skipped = _check_topics(topics, opts.remaps, opts.ground_truth_topic)
        broken = {t: why for t, why in reader.type_errors.items() if t in topic_map}
        if broken:
            raise ReplayError(f'cannot read bag {opts.bag}: '
                              + '; '.join(f'{t}: {why}' for t, why in broken.items()))
        for topic, why in reader.type_errors.items():
            skipped[topic] += f'; {why}'
        if skipped:
            print(f'av-snn replay: not replaying {len(skipped)} topic(s) the classifier does not read: '
                  + '; '.join(f'{t} ({why})' for t, why in skipped.items()), file=sys.stderr)
        gt_topic = next((b for b, g in topic_map.items() if g == opts.ground_truth_topic), None)
        gt_stats = reader.read_stats([gt_topic] if gt_topic else [])
        spans = reader.ground_truth(gt_topic, gt_stats) if gt_topic else []
        samples = reader.custom_data.get(bag_io.SAMPLES_KEY) or []
        if gt_topic is None:
            print(f'av-snn replay: the bag has no ground truth on {opts.ground_truth_topic}; '
                  'reporting classifications only', file=sys.stderr)
        bag_info = {'ground_truth_topic': gt_topic, 'ground_truth_stats': gt_stats, 'skipped_topics': skipped,
                    'bag_span_ns': max(0, reader.end_ns - reader.start_ns), 'window_ns': window_ns}

        ns = opts.namespace
        collector = _Collector(f'{ns}/{NODE_NAME}')
        collector.callback = on_classification
        context = rclpy.context.Context()
        rclpy.init(args=[], context=context, domain_id=opts.domain_id,
                   signal_handler_options=SignalHandlerOptions.NO)
        log_file = (open(opts.node_log, 'w') if opts.node_log
                    else tempfile.NamedTemporaryFile('w+', prefix='av_classifier-', suffix='.log', delete=False))
        process = None
        executor = None
        clock = None
        tmp_dir = tempfile.mkdtemp(prefix='av-snn-replay-')
        try:
            node = rclpy.create_node(PLAYER_NODE_NAME, context=context)
            reliable = QoSProfile(depth=QUEUE_DEPTH, reliability=ReliabilityPolicy.RELIABLE)
            node.create_subscription(Classification, ns + CLASSIFICATION_TOPIC, collector.on_classification,
                                     reliable)
            node.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, collector.on_diagnostics, QUEUE_DEPTH)
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(node)
            spinner = threading.Thread(target=executor.spin, name='replay-executor', daemon=True)
            spinner.start()

            # Publishers exist before the classifier starts: its subscriptions then match writers it
            # already knows, so once our writers see them matched, the first messages are not lost.
            player = _Player(node, {b: ns + g for b, g in topic_map.items()}, topics, collector, opts)
            player.clock = clock = _BagClock(node, ns + CLOCK_TOPIC)
            compressed = bag_io.IMAGE_TOPIC not in topic_map.values()
            node_params_file = namespaced_params_file(params_file, f'{ns}/{NODE_NAME}', Path(tmp_dir))
            process = subprocess.Popen(_node_command(opts, card_path, node_params_file, compressed),
                                       env=_node_env(opts),
                                       stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

            def alive() -> None:
                if process.poll() is not None:
                    raise ReplayError(f'the classifier exited with code {process.returncode}:\n'
                                      f'{_tail(log_file.name)}')

            player.alive = alive
            _wait_ready(node, ns, player, alive, opts.startup_timeout_s, log_file.name)
            node_params = _get_node_params(node, f'{ns}/{NODE_NAME}', REPORTED_PARAMS)
            _warn_if_lossy(node_params, opts)
            if on_ready is not None:
                on_ready()
            wall_start = time.monotonic()
            player.play(reader, window_ns)
            end_ns = clock.now_ns()
            if end_ns is not None:
                clock.set(end_ns, opts.rate or 1.0)   # bag time runs on: the node's timers fire while draining
            last_stamp = max(player.sent_stamps, default=None)
            _drain(collector, spans, last_stamp, opts.drain_timeout_s, alive)
            wall_s = time.monotonic() - wall_start
        finally:
            node_rc = _stop(process)
            if clock is not None:
                clock.stop()
            if executor is not None:
                executor.shutdown(timeout_sec=SHUTDOWN_TIMEOUT_S)
            rclpy.try_shutdown(context=context)
            log_file.close()
            shutil.rmtree(tmp_dir, ignore_errors=True)

    report = _report(opts, card, params_file, spans, samples, collector, player, wall_s, node_rc,
                     log_file.name, topic_map, bag_info, node_params)
    return report


def _wait_ready(node, ns: str, player: _Player, alive, timeout_s: float, log_path: str) -> None:
    """Until the classifier subscribes to our audio and image topics and publishes classifications."""
    deadline = time.monotonic() + timeout_s
    subscription = next(s for s in node.subscriptions if s.topic_name == ns + CLASSIFICATION_TOPIC)
    while True:
        alive()
        pubs = {p.topic_name: p for p in player.publishers.values()}
        audio_ok = pubs[ns + bag_io.AUDIO_TOPIC].get_subscription_count() > 0
        # the node listens to raw or compressed images (input.compressed), not both
        image_ok = any(pubs[ns + t].get_subscription_count() > 0
                       for t in (bag_io.IMAGE_TOPIC, bag_io.COMPRESSED_IMAGE_TOPIC) if ns + t in pubs)
        if audio_ok and image_ok and subscription.get_publisher_count() > 0:
            return
        if time.monotonic() > deadline:
            raise ReplayError(f'the classifier did not subscribe to {sorted(pubs)} within '
                              f'{timeout_s:.0f} s (not active?):\n{_tail(log_path)}')
        time.sleep(POLL_S)


def _get_node_params(node, node_fqn: str, names: tuple[str, ...]) -> dict:
    """Ask the classifier for its parameter values (``{}`` if the service does not answer)."""
    from rcl_interfaces.srv import GetParameters
    client = node.create_client(GetParameters, f'{node_fqn}/get_parameters')
    try:
        if not client.wait_for_service(timeout_sec=PARAM_TIMEOUT_S):
            return {}
        done = threading.Event()
        future = client.call_async(GetParameters.Request(names=list(names)))
        future.add_done_callback(lambda _: done.set())
        if not done.wait(PARAM_TIMEOUT_S) or future.result() is None:
            return {}
        return {n: _parameter_value(v) for n, v in zip(names, future.result().values)}
    finally:
        node.destroy_client(client)


def _parameter_value(value):
    """rcl_interfaces/ParameterValue -> Python value (None when unset)."""
    from rcl_interfaces.msg import ParameterType
    return {ParameterType.PARAMETER_BOOL: lambda v: v.bool_value,
            ParameterType.PARAMETER_INTEGER: lambda v: v.integer_value,
            ParameterType.PARAMETER_DOUBLE: lambda v: v.double_value,
            ParameterType.PARAMETER_STRING: lambda v: v.string_value}.get(value.type, lambda v: None)(value)


def _warn_if_lossy(params: dict, opts: ReplayOptions) -> None:
    """Faster-than-real-time replay needs reliable sensor QoS and a deep inference queue."""
    if opts.rate is not None and opts.rate <= 1.0:
        return
    lossy = []
    if params.get('qos.sensor.reliability') == 'best_effort':
        lossy.append('qos.sensor.reliability is best_effort')
    if params.get('inference.queue_size') == 1:
        lossy.append('inference.queue_size is 1 (newest wins)')
    if lossy:
        print(f'av-snn replay: warning: {"; ".join(lossy)}: fast replay may drop messages or windows '
              '(use config/replay.yaml)', file=sys.stderr)


def _drain(collector: _Collector, spans, last_stamp: int | None, timeout_s: float, alive) -> None:
    """Wait for the classification of the last labelled span (or of the last data), then for a
    diagnostics report that follows it; give up after ``timeout_s`` without progress."""
    if last_stamp is None:
        return
    target = max((s.end_ns for s in spans), default=None)
    with collector.cond:
        count, last_progress = len(collector.received), time.monotonic()
        while target is None or (collector.newest_end_ns or 0) < target:
            if len(collector.received) != count:
                count, last_progress = len(collector.received), time.monotonic()
            if time.monotonic() - last_progress > (timeout_s if target is not None else DIAG_WAIT_S):
                break
            collector.cond.wait(POLL_S)
            alive()
        after = time.monotonic_ns()
        deadline = time.monotonic() + DIAG_WAIT_S
        while (collector.diag_received_ns or 0) < after and time.monotonic() < deadline:
            collector.cond.wait(POLL_S)


def _stop(process: subprocess.Popen | None) -> int | None:
    """SIGINT (a clean ROS shutdown), then terminate/kill if it hangs; returns the exit code."""
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return process.returncode


def _tail(path: str) -> str:
    try:
        text = Path(path).read_text(errors='replace')
    except OSError:
        return ''
    return text[-LOG_TAIL_CHARS:]


def _number(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return float(value)
        except (TypeError, ValueError):
            return value


def windows_in_span(span_ns: int, window_ns: int, hop_s: float | None) -> int | None:
    """About how many windows of ``window_ns`` on a ``hop_s`` grid fit in ``span_ns`` of bag time.

    From the bag's metadata (first to last receive time), so it does not shrink when the storage
    delivers less than the bag holds; approximate by one window at the ends (receive time vs stamps).
    """
    if not hop_s or hop_s <= 0:
        return None
    if span_ns < window_ns:
        return 0
    return int((span_ns - window_ns) // int(round(hop_s * bag_io.NS_PER_S))) + 1


def incomplete_reasons(report: dict) -> list[str]:
    """Why a report does not measure the whole bag (empty when it does); decides replay's exit code.

    Any message of a replayed topic the storage did not deliver or that did not decode, any
    ground-truth label that could not be read, and any labelled window that got no classification.
    """
    reasons = []
    read = report['bag_read']
    for topic, c in read['per_topic'].items():
        if topic in report['ground_truth_read']['per_topic']:
            continue                                   # its loss is the unreadable labels below
        if c['unread']:
            reasons.append(f"{topic}: {c['unread']} of {c['expected']} messages could not be read from the bag")
        if c['undecodable']:
            reasons.append(f"{topic}: {c['undecodable']} of {c['expected']} messages could not be decoded "
                           '(not published)')
    for error in read['storage_errors']:
        reasons.append(f'the bag\'s storage stopped the replay early: {error}')
    if report['unreadable_spans']:
        reasons.append(f"{report['unreadable_spans']} of {report['num_spans'] + report['unreadable_spans']} "
                       'ground-truth labels could not be read (counted as not scored)')
    if report['missed']:
        reasons.append(f"{report['missed']} of {report['num_spans']} labelled windows got no classification")
    return reasons


def _report(opts, card, params_file, spans, samples, collector, player, wall_s, node_rc, log_path,
            topic_map, bag_info, node_params) -> dict:
    predictions = []
    for r in collector.received:
        done = player.completion_time(r.end_ns)
        latency = (r.received_ns - done) / bag_io.NS_PER_S if done is not None else float('nan')
        predictions.append(scoring.Prediction(r.start_ns, r.end_ns, r.class_id, r.confidence, r.label, latency))
    gt = [scoring.Span(s.start_ns, s.end_ns, s.class_id, s.label) for s in spans]
    gt_topic, gt_stats = bag_info['ground_truth_topic'], bag_info['ground_truth_stats']
    result = scoring.score(gt, predictions, card.labels,
                           unreadable_spans=gt_stats.lost(gt_topic) if gt_topic else 0)
    by_start = {s['span_start_ns']: s for s in samples}
    for m in result['matches']:
        sample = by_start.get(m['span_start_ns'])
        if sample:
            m.update(audio_file=sample['audio_file'], image_index=sample['image_index'])
    diagnostics = {name: {k: _number(v) for k, v in values.items()}
                   for name, values in collector.diagnostics.items()}
    counters = _node_counters(diagnostics)
    flags: dict[str, int] = {}
    for r in collector.received:
        for f in r.flags:
            flags[f] = flags.get(f, 0) + 1
    report = {
        'bag': str(opts.bag),
        'card': str(card.path),
        'model': card.name,
        'backend_requested': opts.backend or 'params file default',
        'params_file': str(params_file),
        'rate': opts.rate if opts.rate is not None else 'as_fast_as_possible',
        'topics': topic_map,
        'namespace': opts.namespace,
        'wall_time_s': wall_s,
        'skipped_topics': bag_info['skipped_topics'],
        'bag_read': (player.stats or bag_io.ReadStats()).as_dict(),
        'ground_truth_read': gt_stats.as_dict(),
        'messages_published': player.published,
        'classifications_received': len(collector.received),
        'classifications_per_s': len(collector.received) / wall_s if wall_s > 0 else None,
        'flow_control_wait_s': player.flow_wait_s,
        'flow_control_stalls': player.stalls,
        'window_flags': flags,
        **{k: v for k, v in result.items() if k != 'matches'},
        'latency_definition': ('receive time of the classification minus publish time of the last bag '
                               'message stamped before the window end (same monotonic clock)'),
        'windows_in_bag_estimate': windows_in_span(bag_info['bag_span_ns'], bag_info['window_ns'],
                                                   node_params.get('window.hop_s')),
        'windows_formed': counters.get('windows_formed'),
        'windows_dropped': counters.get('windows_dropped'),
        'windows_classified': counters.get('windows_classified'),
        'node_inference_latency_s': _with_prefix(counters, 'latency.inference_'),
        # the node's clock runs on bag time (_BagClock): its now() at publish minus the window end
        'node_stamp_to_publish_s': _with_prefix(counters, 'latency.stamp_to_publish_'),
        'node_queue_wait_s': _with_prefix(counters, 'latency.queue_wait_'),
        'backend': counters.get('backend'),
        'energy': _with_prefix(counters, 'energy.') or None,
        'node_diagnostics': diagnostics,
        'node_exit_code': node_rc,
        'node_log': log_path,
        'node_parameters': node_params,
        'matches': result['matches'],
        'classifications': [
            {'window_start_ns': p.start_ns, 'window_end_ns': p.end_ns, 'class_id': p.class_id,
             'label': p.label, 'confidence': p.confidence,
             'latency_s': p.latency_s if p.latency_s == p.latency_s else None, 'flags': list(r.flags),
             'scores': list(r.scores)}
            for p, r in zip(predictions, collector.received)],
    }
    report['incomplete'] = incomplete_reasons(report)
    return report


def _node_counters(diagnostics: dict) -> dict:
    """Flatten the classifier's diagnostics (one status per name) into one dict of values."""
    merged: dict = {}
    for values in diagnostics.values():
        for k, v in values.items():
            if k not in ('level', 'message'):
                merged[k] = v
    return merged


# ---------------------------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('bag', type=Path, help='bag folder (rosbag2: mcap or sqlite3)')
    parser.add_argument('--json', type=Path, required=True, metavar='OUT', help='write the report here')
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument('--rate', type=float, default=None, help='bag time x rate (default 1.0: real time)')
    pace.add_argument('--as-fast-as-possible', action='store_true',
                      help='publish as fast as the classifier keeps up (flow controlled, no drops)')
    parser.add_argument('--card', type=Path, default=None, help='model card (default: the shipped default)')
    parser.add_argument('--backend', default=None, help='backend.name for the node (default: params file)')
    parser.add_argument('--params-file', type=Path, default=None,
                        help='ROS parameter file of the classifier (default: config/replay.yaml)')
    parser.add_argument('--remap', action='append', default=[], metavar='/FROM:=/TO',
                        help='publish bag topic /FROM on /TO (repeatable)')
    parser.add_argument('--plots', type=Path, default=None, metavar='DIR',
                        help='write confusion_matrix.png and latency_histogram.png here')
    parser.add_argument('--lookahead-s', type=float, default=DEFAULT_LOOKAHEAD_S,
                        help='most bag time the player runs ahead of the newest classified window')
    parser.add_argument('--stall-timeout-s', type=float, default=DEFAULT_STALL_TIMEOUT_S,
                        help='move on after this long without a classification (windows dropped)')
    parser.add_argument('--domain-id', type=int, default=None, help='ROS domain of the replay graph')
    parser.add_argument('--namespace', default=None,
                        help='namespace of the replay graph (default /av_snn_replay_<pid>: other nodes '
                             'on the domain neither feed nor hear it)')
    parser.add_argument('--node-log', type=Path, default=None, help='classifier log file')
    parser.add_argument('--allow-incomplete', action='store_true',
                        help=f'exit 0 even when the score does not cover the whole bag (default: exit '
                             f'{EXIT_INCOMPLETE} when messages or labels could not be read, or labelled windows '
                             'got no classification)')


def options_from_args(args: argparse.Namespace) -> ReplayOptions:
    rate = None if args.as_fast_as_possible else (args.rate if args.rate is not None else 1.0)
    return ReplayOptions(bag=args.bag, rate=rate, card=args.card, backend=args.backend,
                         params_file=args.params_file, remaps=parse_remaps(args.remap),
                         lookahead_s=args.lookahead_s, stall_timeout_s=args.stall_timeout_s,
                         domain_id=args.domain_id, namespace=args.namespace,
                         node_log=args.node_log)


def write_outputs(report: dict, json_path: Path | None, plots_dir: Path | None) -> None:
    """The JSON report and, optionally, the PNG plots (paths added to the report)."""
    if plots_dir is not None:
        from . import plots
        plots_dir.mkdir(parents=True, exist_ok=True)
        labels = report['confusion_matrix_columns'][:-1]
        report['plots'] = {
            'confusion_matrix': str(plots.plot_confusion(report['confusion_matrix'], labels,
                                                         report['confusion_matrix_columns'],
                                                         plots_dir / 'confusion_matrix.png')),
            'latency_histogram': str(plots.plot_latency([c['latency_s'] for c in report['classifications']
                                                         if c['latency_s'] is not None],
                                                        plots_dir / 'latency_histogram.png')),
        }
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + '\n')


def summary(report: dict) -> str:
    lat = report['latency_s']

    def ms(v):
        return 'n/a' if v is None else f'{v * 1e3:.1f} ms'

    acc = report['accuracy']
    unreadable = report['unreadable_spans']
    labelled = report['num_spans'] + unreadable
    if unreadable:
        # never "N/N, 0 missed" over the labels that happened to be readable: the bag's labels count
        scored = (f"{report['correct']}/{labelled} labelled windows; {unreadable + report['missed']} not scored: "
                  f"{unreadable} label(s) unreadable, {report['missed']} without a classification")
    else:
        scored = f"{report['correct']}/{labelled} labelled windows, {report['missed']} missed"
    in_bag = report.get('windows_in_bag_estimate')
    lines = [
        f"accuracy {'n/a' if acc is None else f'{acc:.1%}'} ({scored}), {report['classifications_received']} "
        f"classifications in {report['wall_time_s']:.1f} s",
        f"latency p50 {ms(lat['p50'])}, p95 {ms(lat['p95'])}, p99 {ms(lat['p99'])}",
        f"windows formed {report['windows_formed']}, dropped {report['windows_dropped']} (node diagnostics)"
        + ('' if in_bag is None else f"; the bag spans about {in_bag}"),
    ]
    if report['skipped_topics']:
        lines.append(f"skipped topics (not classifier inputs): {', '.join(report['skipped_topics'])}")
    if report['incomplete']:
        lines.append(f"INCOMPLETE: the score does not cover the whole bag (exit {EXIT_INCOMPLETE}):")
        lines += [f'  - {reason}' for reason in report['incomplete']]
    if report['node_exit_code'] not in (0, None):
        lines.append(f"warning: the classifier exited with code {report['node_exit_code']} when stopped "
                     f"(log: {report['node_log']})")
    if report['flow_control_stalls']:
        lines.append(f"warning: {report['flow_control_stalls']} flow-control stall(s): the classifier published "
                     'nothing for a while (see windows_dropped and node_diagnostics)')
    return '\n'.join(lines)


def exit_code(report: dict, allow_incomplete: bool = False) -> int:
    """0 for a run that measured the whole bag, :data:`EXIT_INCOMPLETE` otherwise (see docs/replay.md)."""
    return EXIT_INCOMPLETE if report['incomplete'] and not allow_incomplete else 0


def main(args: argparse.Namespace) -> int:
    from ..model_card import ModelFileError
    try:
        opts = options_from_args(args)
        report = run_replay(opts)
    except (ReplayError, ModelFileError, ValueError, FileNotFoundError) as exc:   # BagError is a ValueError
        print(f'av-snn replay: {exc}', file=sys.stderr)
        return EXIT_FAILED
    write_outputs(report, args.json, args.plots)
    print(summary(report))
    print(f'report: {args.json}')
    return exit_code(report, args.allow_incomplete)
