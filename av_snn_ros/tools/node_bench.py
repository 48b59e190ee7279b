"""The node half of ``av-snn bench``: real data replayed at real time through the real classifier node.

AV-digits samples are written into a bag (camera at :data:`NODE_FPS`, 16 kHz audio chunks) and replayed
through the node process; the report follows ros2_benchmark (output rate at a fixed input rate, missed
windows, latency p50/p99 and jitter, node CPU % and RSS). The AV-digits reading comes from the training
package (its data owner): this is a tool, not runtime code.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..timing import latency_stats

NODE_FPS = 30.0                   # camera rate of the real-time replay
NODE_CHUNK_MS = 20.0              # microphone chunk length (16 kHz from the card's preprocessing)
NODE_SECONDS, QUICK_NODE_SECONDS = 30.0, 8.0
NODE_PARAMS_FILE = 'robot.yaml'   # the robot configuration: best-effort sensors, newest-wins queue
CPU_SAMPLE_S = 0.25               # psutil sampling period of the node process
NODE_LATENCY_MARGIN_S = 0.010     # target: end-to-end p99 <= node inference p99 + 10 ms
#: the replay runs on a private ROS domain drawn from this range (above the usual 0..100 of tests and
#: robots), discovery limited to this host: other graphs on the machine must not mix into the numbers
PRIVATE_DOMAIN_RANGE = (101, 232)


def private_domain() -> int:
    """A random ROS domain id for an isolated replay; also limits discovery to localhost."""
    import random
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    current = os.environ.get('ROS_DOMAIN_ID')
    while True:
        domain = random.randint(*PRIVATE_DOMAIN_RANGE)
        if str(domain) != current:
            return domain


class ProcessSampler:
    """Samples CPU time and RSS of one process in a background thread (psutil)."""

    def __init__(self, pid: int, period_s: float = CPU_SAMPLE_S) -> None:
        import threading

        import psutil
        self.process = psutil.Process(pid)
        self.period_s = period_s
        self.samples: list[tuple[float, float, int, int]] = []   # (monotonic s, cpu s, rss bytes, threads)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name='bench-cpu-sampler', daemon=True)

    def _sample(self) -> None:
        import psutil
        try:
            with self.process.oneshot():
                t = self.process.cpu_times()
                self.samples.append((time.monotonic(), t.user + t.system, self.process.memory_info().rss,
                                     self.process.num_threads()))
        except psutil.Error:
            self._stop.set()          # the process ended

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.period_s)

    def start(self) -> 'ProcessSampler':
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def cpu_percent(self, t0: float, t1: float) -> float | None:
        """Mean CPU use between monotonic times ``t0`` and ``t1`` (100 = one core busy)."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        return 100.0 * (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


def node_process(parent_pid: int, timeout_s: float = 10.0):
    """The classifier child process that :func:`run_replay` started."""
    import psutil
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for child in psutil.Process(parent_pid).children(recursive=True):
            try:
                if any('classifier_node' in part for part in child.cmdline()):
                    return child
            except psutil.Error:
                continue
        time.sleep(CPU_SAMPLE_S)
    return None


def make_node_bag(out: Path, card, seconds: float, data_root: Path, hop_s: float) -> dict:
    """A bag of real AV-digits samples, ``seconds`` long, camera at NODE_FPS, 16 kHz audio chunks."""
    from av_snn_training.data.av_digits import LABELS, AVDigits

    from ..replay.make_bag import RecordingConfig, write_samples_bag
    cfg = card.preprocessing
    rec = RecordingConfig(sample_rate=cfg.sample_rate, window_s=cfg.window_s, timesteps=cfg.timesteps,
                          hop_s=hop_s, fps=NODE_FPS, chunk_ms=NODE_CHUNK_MS,
                          encoding='rgb8' if cfg.image_channels == 3 else 'mono8')
    n = max(1, int(np.ceil(seconds * 1e9 / rec.segment_ns)))
    dataset = AVDigits(data_root, split='test', cfg=cfg)
    samples = [dataset.raw(i % len(dataset)) for i in range(n)]     # long runs repeat the test split
    records = write_samples_bag(out, samples, LABELS, rec)
    duration_ns = records[-1].span_start_ns + rec.segment_ns - records[0].span_start_ns
    window_ns = int(round(cfg.window_s * 1e9))
    hop_ns = int(round(hop_s * 1e9))
    return {'bag': str(out), 'seconds': duration_ns / 1e9, 'samples': len(records),
            'start_ns': records[0].span_start_ns, 'hop_s': hop_s,
            'expected_windows': int((duration_ns - window_ns) // hop_ns) + 1,
            'camera_fps': NODE_FPS, 'audio_rate_hz': cfg.sample_rate, 'audio_chunk_ms': NODE_CHUNK_MS}


def classifier_parameters(data: dict, path: Path) -> dict:
    """The ``ros__parameters`` of the classifier in a params file (key ``av_classifier``, ``/**/av_classifier``...)."""
    for key, value in (data or {}).items():
        if str(key).rstrip('/').split('/')[-1] == 'av_classifier' and isinstance(value, dict):
            return value.setdefault('ros__parameters', {})
    raise ValueError(f'{path}: no av_classifier section (keys: {", ".join(map(str, data or {}))})')


def _params_file(workdir: Path, threads: int, source: Path | None = None) -> tuple[Path, float]:
    """The node parameters (default: the shipped robot file) with this bench's thread budget.

    Returns the written file and the window hop it sets.
    """
    import yaml

    from ..paths import config_dir
    from ..windowing import WindowParams
    path = Path(source or config_dir() / NODE_PARAMS_FILE)
    data = yaml.safe_load(path.read_text())
    params = classifier_parameters(data, path)
    params.setdefault('backend', {})['threads'] = threads
    path = workdir / 'bench_params.yaml'
    path.write_text(yaml.safe_dump(data))
    return path, float(params.get('window', {}).get('hop_s', WindowParams().hop_s))


def _missed_starts(bag: dict, classifications: list[dict]) -> list[float]:
    """Start times (s after the bag start) of the expected windows that were not classified."""
    hop_ns = int(round(bag['hop_s'] * 1e9))
    got = {c['window_start_ns'] for c in classifications}
    return [k * bag['hop_s'] for k in range(bag['expected_windows']) if bag['start_ns'] + k * hop_ns not in got]


def _drop_counters(diagnostics: dict) -> dict:
    """The node's window/message drop counters from its last diagnostics report."""
    out: dict[str, Any] = {}
    for values in diagnostics.values():
        for k, v in values.items():
            if k.startswith(('dropped_', 'drop.', 'windows_')) or k in ('messages_dropped',):
                out[k] = v
    return out


def _rate_hz(times_s: list[float]) -> float | None:
    """Mean rate of events over the span from the first to the last one (ros2_benchmark's frame rate)."""
    if len(times_s) < 2 or max(times_s) <= min(times_s):
        return None
    return (len(times_s) - 1) / (max(times_s) - min(times_s))


def _stats_ms(values_s: list[float]) -> dict | None:
    values = [v for v in values_s if v is not None and v == v]
    if not values:
        return None
    return latency_stats(values).as_dict()


def bench_node(card_path: Path, backend: str, threads: int, seconds: float, data_root: Path,
               workdir: Path, params_source: Path | None = None, node_env_drop: tuple[str, ...] = ()) -> dict:
    """Replay real data at real time through the real node process; ros2_benchmark-style report.

    ``node_env_drop``: environment variables the caller set for itself only (the bench's OpenMP
    default), removed while the node process starts so it gets the caller's environment.
    """
    from ..model_card import ModelCard
    from ..replay.replay import ReplayOptions, run_replay
    card = ModelCard.load(card_path)
    params_file, hop_s = _params_file(workdir, threads, params_source)
    bag = make_node_bag(workdir / 'node_bag', card, seconds, data_root, hop_s)
    holder: dict[str, Any] = {'received': []}

    def on_classification(item) -> None:
        holder['received'].append(item.received_ns / 1e9)

    def on_ready() -> None:
        proc = node_process(os.getpid())
        if proc is not None:
            holder['sampler'] = ProcessSampler(proc.pid).start()
        holder['t0'] = time.monotonic()

    domain = private_domain()
    opts = ReplayOptions(bag=Path(bag['bag']), rate=1.0, card=card_path, backend=backend,
                         params_file=params_file, domain_id=domain)
    dropped = {name: os.environ.pop(name) for name in node_env_drop if name in os.environ}
    try:
        report = run_replay(opts, on_classification=on_classification, on_ready=on_ready)
    finally:
        os.environ.update(dropped)
        sampler = holder.get('sampler')
        if sampler is not None:
            sampler.stop()
    t0 = holder.get('t0', 0.0)
    t1 = t0 + report['wall_time_s']
    classifications = report['classifications']
    latencies = [c['latency_s'] for c in classifications]
    ends = [c['window_end_ns'] / 1e9 for c in classifications]
    received = len(classifications)
    lat = _stats_ms(latencies)
    inference = {k: float(v) for k, v in (report.get('node_inference_latency_s') or {}).items()}
    inf_p99 = inference.get('p99_s')
    out: dict[str, Any] = {
        'card': str(card_path), 'model': card.model, 'backend': report.get('backend'),
        'params_file': f'{params_source or NODE_PARAMS_FILE} (backend.threads={threads})', 'input': bag,
        'replay_rate': 1.0, 'ros_domain_id': domain, 'wall_time_s': report['wall_time_s'],
        'windows_expected': bag['expected_windows'], 'windows_received': received,
        'windows_missed': bag['expected_windows'] - received,
        'missed_window_starts_s': _missed_starts(bag, classifications),
        'windows_dropped_by_node': report.get('windows_dropped'),
        'mean_output_rate_hz': _rate_hz(holder['received']),
        'expected_output_rate_hz': 1.0 / hop_s,
        'latency_definition': report.get('latency_definition'),
        'end_to_end_latency_ms': lat,
        'node_inference_latency_s': inference,
        'node_queue_wait_s': {k: float(v) for k, v in (report.get('node_queue_wait_s') or {}).items()},
        'node_drop_counters': _drop_counters(report.get('node_diagnostics') or {}),
        'flow_control_stalls': report.get('flow_control_stalls'),
        'flow_control_wait_s': report.get('flow_control_wait_s'),
        'accuracy': report.get('accuracy'),
        'window_flags': report.get('window_flags'),
    }
    if len(ends) > 1:
        intervals = np.diff(sorted(ends))
        out['output_interval_jitter_ms'] = {'std': float(np.std(intervals) * 1000),
                                            'max_abs_dev': float(np.max(np.abs(intervals - hop_s)) * 1000)}
    if sampler is not None:
        out['node_cpu_percent'] = sampler.cpu_percent(t0, t1)
        rss = [s[2] for s in sampler.samples if t0 <= s[0] <= t1]
        out['node_rss_mb'] = {'start': rss[0] / 2 ** 20, 'end': rss[-1] / 2 ** 20} if rss else None
        out['node_threads'] = max((s[3] for s in sampler.samples), default=None)
    else:
        out['node_cpu_percent'] = None
    out['targets'] = {
        'no_dropped_windows': out['windows_missed'] == 0,
        'p99_within_inference_plus_10ms': (lat is not None and inf_p99 is not None
                                           and lat['p99_ms'] <= 1000 * (inf_p99 + NODE_LATENCY_MARGIN_S)),
    }
    return out


def node_summary(node: dict) -> str:
    """Text lines for the node section."""
    if 'skipped' in node:
        return f'\nnode: skipped: {node["skipped"]}'
    lat = node.get('end_to_end_latency_ms') or {}
    inf = node.get('node_inference_latency_s') or {}
    wait = node.get('node_queue_wait_s') or {}
    cpu = node.get('node_cpu_percent')
    nan = float('nan')
    return (f'\nnode ({node["model"]}, backend {node["backend"]}, real time {node["input"]["seconds"]:.0f} s, '
            f'camera {node["input"]["camera_fps"]:g} fps, audio {node["input"]["audio_rate_hz"]} Hz):\n'
            f'  windows {node["windows_received"]}/{node["windows_expected"]} (missed {node["windows_missed"]}), '
            f'output {node["mean_output_rate_hz"] or float("nan"):.2f} Hz '
            f'(expected {node["expected_output_rate_hz"]:.2f})\n'
            f'  end-to-end latency p50 {lat.get("p50_ms", nan):.1f} ms, p99 {lat.get("p99_ms", nan):.1f} ms; '
            f'node inference p50 {1000 * inf.get("p50_s", nan):.1f} ms, '
            f'p99 {1000 * inf.get("p99_s", nan):.1f} ms; queue wait p50 {1000 * wait.get("p50_s", nan):.1f} ms; '
            f'node CPU '
            f'{cpu if cpu is None else round(cpu, 1)} %')
