#!/usr/bin/env python3
"""Soak test: replay >= 10 minutes of real sensor data through the real node, faster than real time,
and watch the node process's memory.

The node runs as its own process (``av-snn replay`` machinery, replay parameters: reliable, nothing
lost); its RSS is sampled with psutil while the bag plays as fast as the node keeps up (the replay's
flow control bounds in-flight data). The report gives RSS over bag time, the growth after a warm-up
(target < 5 %), a linear trend in MB per hour of data, and the memory bounds that should make the
growth zero: the windower's buffers, the inference queue and the statistics windows.

Usage (from a checkout, after scripts/install.sh):
    .venv/bin/python scripts/soak.py --minutes 10 --json soak.json [--card CARD] [--backend auto]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
for extra in (REPO, REPO / 'training'):       # run from a checkout without installing
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

DEFAULT_MINUTES = 10.0
WARMUP_FRACTION = 0.2         # RSS growth is measured from the end of the first 20 % of the data
GROWTH_TARGET = 0.05          # < 5 % growth after warm-up
SAMPLE_PERIOD_S = 0.5
PARAMS_FILE = 'replay.yaml'   # reliable, deep queues: a faster-than-real-time replay loses nothing
S_PER_HOUR = 3600.0


def memory_bounds(card, params: dict) -> dict:
    """The node's bounded buffers, from its actual parameters and constants (what caps the memory)."""
    from av_snn_ros import runtime_stats, windowing
    window = params.get('window', {})
    max_buffer_s = float(window.get('max_buffer_s', windowing.WindowParams.max_buffer_s))
    pre = card.preprocessing
    return {
        'windower_audio_buffer': f'max_buffer_s={max_buffer_s:g} s of audio at the stream rate '
                                 f'(<= {int(max_buffer_s * windowing.MAX_SAMPLE_RATE)} float32 samples at the '
                                 f'{windowing.MAX_SAMPLE_RATE} Hz cap; {int(max_buffer_s * pre.sample_rate)} at '
                                 f'{pre.sample_rate} Hz)',
        'windower_frames': f'frames still needed by an undecided window, hard cap '
                           f'max_buffer_s * {windowing.MAX_FRAME_RATE_HZ} = '
                           f'{int(max_buffer_s * windowing.MAX_FRAME_RATE_HZ)} frames',
        'inference_queue': f'inference.queue_size={params.get("inference", {}).get("queue_size")} windows '
                           '(oldest dropped and counted as dropped_busy when full)',
        'subscription_history': f'qos.sensor.depth={params.get("qos", {}).get("sensor", {}).get("depth")} '
                                'messages per sensor topic (KEEP_LAST)',
        'latency_trackers': f'{runtime_stats.DEFAULT_LATENCY_SAMPLES} samples each (deque)',
        'rate_meters': f'events of the last {runtime_stats.DEFAULT_RATE_WINDOW_S:g} s',
    }


def trend_mb_per_hour(times_s: list[float], rss_mb: list[float]) -> float | None:
    """Least-squares slope of RSS against bag time, in MB per hour of data."""
    if len(times_s) < 3 or max(times_s) <= min(times_s):
        return None
    slope = np.polyfit(np.asarray(times_s), np.asarray(rss_mb), 1)[0]
    return float(slope * S_PER_HOUR)


def run(args: argparse.Namespace) -> dict:
    import yaml

    from av_snn_ros.tools.bench import machine_info, registry_target
    from av_snn_ros.tools.profiling import measure_gemm_gflops
    from av_snn_ros.tools.node_bench import (ProcessSampler, classifier_parameters, make_node_bag, node_process,
                                             private_domain)
    from av_snn_ros.model_card import ModelCard
    from av_snn_ros.paths import config_dir, default_data_root, default_model_card
    from av_snn_ros.replay.replay import ReplayOptions, run_replay

    data_root = args.data_root or default_data_root()
    if data_root is None:
        raise SystemExit('soak: no data root; pass --data-root DIR (with fsdd/ and mnist/)')
    machine = machine_info()          # the CPU, load and GEMM context of every number below
    gemm = measure_gemm_gflops(repeats=3)
    params_path = config_dir() / PARAMS_FILE
    params = classifier_parameters(yaml.safe_load(params_path.read_text()), params_path)
    hop_s = float(params['window']['hop_s'])
    with tempfile.TemporaryDirectory(prefix='av-snn-soak-') as tmp:
        workdir = Path(tmp)
        card_path = args.card or default_model_card()
        note = None
        if not Path(card_path).exists():
            target = registry_target('misnet_tiny', 32, 4, 1, data_root, workdir / 'card')
            card_path, note = Path(target.card.path), 'no shipped default model: untrained BN-calibrated misnet_tiny'
        card = ModelCard.load(card_path)
        t_bag = time.monotonic()
        bag = make_node_bag(workdir / 'bag', card, args.minutes * 60.0, data_root, hop_s)
        bag_build_s = time.monotonic() - t_bag
        state: dict = {'received': []}

        def on_ready() -> None:
            proc = node_process(os.getpid())
            if proc is None:
                raise RuntimeError('cannot find the classifier process to sample')
            state['sampler'] = ProcessSampler(proc.pid, SAMPLE_PERIOD_S).start()
            state['t0'] = time.monotonic()

        def on_classification(item) -> None:
            state['received'].append((time.monotonic(), item.end_ns))

        opts = ReplayOptions(bag=Path(bag['bag']), rate=None, card=Path(card_path), backend=args.backend,
                             params_file=params_path, domain_id=private_domain())
        try:
            report = run_replay(opts, on_classification=on_classification, on_ready=on_ready)
        finally:
            if 'sampler' in state:
                state['sampler'].stop()
    sampler, received = state['sampler'], state['received']
    if len(received) < 2:
        raise SystemExit(f'soak: only {len(received)} classifications received; see the node log')
    # Map wall time to bag (data) time through the classifications' window ends.
    wall = np.array([r[0] for r in received])
    data_s = (np.array([r[1] for r in received]) - received[0][1]) / 1e9
    t_last = wall[-1]
    samples = [s for s in sampler.samples if state['t0'] <= s[0] <= t_last]
    times = [float(np.interp(s[0], wall, data_s)) for s in samples]
    rss_mb = [s[2] / 2 ** 20 for s in samples]
    warm_t = WARMUP_FRACTION * data_s[-1]
    after = [(t, m) for t, m in zip(times, rss_mb) if t >= warm_t]
    base = after[0][1] if after else None
    growth = (max(m for _, m in after) - base) / base if after else None
    data_minutes = float(data_s[-1] + card.preprocessing.window_s) / 60.0
    wall_s = float(t_last - state['t0'])
    machine['loadavg_end'] = list(os.getloadavg())
    return {
        'machine': machine, 'gemm': gemm,
        'card': str(card_path), 'note': note, 'backend': report.get('backend'), 'params_file': PARAMS_FILE,
        'bag': {k: v for k, v in bag.items() if k != 'bag'}, 'bag_build_s': bag_build_s,
        'data_minutes': data_minutes, 'wall_s': wall_s, 'speed_vs_real_time': data_minutes * 60 / wall_s,
        'windows_expected': bag['expected_windows'], 'windows_received': len(received),
        'windows_dropped_by_node': report.get('windows_dropped'),
        'rss_mb': {'start': rss_mb[0], 'after_warmup': base, 'end': rss_mb[-1], 'max': max(rss_mb)},
        'warmup_fraction': WARMUP_FRACTION,
        'growth_after_warmup': growth, 'growth_target': GROWTH_TARGET,
        'growth_target_met': growth is not None and growth < GROWTH_TARGET,
        'trend_after_warmup_mb_per_hour_of_data': trend_mb_per_hour([t for t, _ in after], [m for _, m in after]),
        'node_cpu_percent': sampler.cpu_percent(state['t0'], t_last),
        'memory_bounds': memory_bounds(card, params),
        'rss_series': [{'data_s': round(t, 2), 'rss_mb': round(m, 2)} for t, m in zip(times, rss_mb)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--minutes', type=float, default=DEFAULT_MINUTES,
                        help='minutes of sensor data to replay (default %(default)s)')
    parser.add_argument('--json', type=Path, required=True, help='write the report here')
    parser.add_argument('--card', type=Path, default=None, help='model card (default: the shipped default)')
    parser.add_argument('--backend', default='auto', help='node backend (default auto)')
    parser.add_argument('--data-root', type=Path, default=None, help='AV digits data (fsdd/, mnist/)')
    args = parser.parse_args(argv)
    if not args.minutes > 0:
        parser.error('--minutes must be > 0')
    report = run(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    r = report['rss_mb']
    growth = report['growth_after_warmup']
    print(f'soak: {report["data_minutes"]:.1f} min of data in {report["wall_s"]:.0f} s '
          f'({report["speed_vs_real_time"]:.1f}x real time), windows {report["windows_received"]}/'
          f'{report["windows_expected"]}, node RSS {r["start"]:.0f} -> {r["after_warmup"]:.0f} (after warm-up) -> '
          f'{r["end"]:.0f} MB (max {r["max"]:.0f}); growth after warm-up '
          f'{100 * growth:.2f} % (target < {100 * GROWTH_TARGET:.0f} %), trend '
          f'{report["trend_after_warmup_mb_per_hour_of_data"]:.1f} MB/h of data; node CPU '
          f'{report["node_cpu_percent"]:.0f} %')
    for name, bound in report['memory_bounds'].items():
        print(f'  bound {name}: {bound}')
    print(f'report: {args.json}')
    return 0 if report['growth_target_met'] else 1


if __name__ == '__main__':
    sys.exit(main())
