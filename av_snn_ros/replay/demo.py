"""``av-snn demo``: the embedded default demo. No camera, microphone or GPU needed.

Replays the bundled real-data bag (``data/demo_bag``: spoken digits of a held-out speaker with
handwritten digits, see its ATTRIBUTION.md) through the real node graph with the shipped default model,
prints every classification with its confidence next to the ground truth, then a summary (accuracy,
latency). It is ``av-snn replay`` with defaults and live output.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import bag_io
from .replay import (EXIT_FAILED, ReplayError, ReplayOptions, Received, exit_code, run_replay, summary,
                     write_outputs)

DEMO_BAG = Path('data') / 'demo_bag'


def demo_bag_path() -> Path:
    """The bundled demo bag (share dir of an install, or the checkout)."""
    from ..paths import share_dir
    return share_dir() / DEMO_BAG


class _Printer:
    """Prints classifications as they arrive, with the ground truth of the span they cover."""

    def __init__(self, spans: list[bag_io.LabelSpan], t0_ns: int, stream=None) -> None:
        self.spans, self.t0_ns, self.stream = spans, t0_ns, stream

    def truth(self, item: Received) -> str:
        window = item.end_ns - item.start_ns
        for s in self.spans:
            overlap = min(s.end_ns, item.end_ns) - max(s.start_ns, item.start_ns)
            if overlap * 2 > window:                 # the window is mostly this span
                return s.label
        return '-'                                   # straddles two utterances

    def __call__(self, item: Received) -> None:
        truth = self.truth(item)
        mark = '' if truth == '-' else ('  ok' if truth == item.label else '  WRONG')
        t = (item.start_ns - self.t0_ns) / bag_io.NS_PER_S
        window = (item.end_ns - item.start_ns) / bag_io.NS_PER_S
        flags = f"  [{', '.join(item.flags)}]" if item.flags else ''
        print(f'  t={t:6.2f}s +{window:.2f}s  predicted {item.label:>3} ({item.confidence:5.1%})  '
              f'truth {truth:>3}{mark}{flags}', file=self.stream or sys.stdout, flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--bag', type=Path, default=None, help='bag to replay (default: the bundled demo bag)')
    parser.add_argument('--card', type=Path, default=None, help='model card (default: the shipped default)')
    parser.add_argument('--backend', default=None, help='backend.name (default: the params file\'s)')
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument('--rate', type=float, default=1.0,
                      help='bag time x rate (default 1.0: real time, as on a robot; latency is meaningful)')
    pace.add_argument('--fast', action='store_true',
                      help='as fast as the classifier keeps up (latency then includes queueing)')
    parser.add_argument('--json', type=Path, default=None, help='also write the replay report here')


def main(args: argparse.Namespace) -> int:
    from ..model_card import ModelCard, ModelFileError
    from ..paths import default_model_card
    bag = args.bag or demo_bag_path()
    try:
        card = args.card or default_model_card()
        if args.card is None and not card.is_file():
            raise ModelFileError(f'the shipped default model is missing ({card}); reinstall with '
                                 'scripts/install.sh or pass --card CARD')
        ModelCard.load(card)                      # fail before printing anything about the replay
        with bag_io.BagReader(bag) as reader:
            spans, t0, reader_end = reader.ground_truth(), reader.start_ns, reader.end_ns
        opts = ReplayOptions(bag=bag, rate=None if args.fast else args.rate, card=card, backend=args.backend)
        print(f'av-snn demo: replaying {bag} ({len(spans)} labelled utterances, '
              f'{(reader_end - t0) / bag_io.NS_PER_S:.0f} s) through the classifier node', flush=True)
        print("(one window per hop; truth '-' = the window straddles two utterances and is not scored)",
              flush=True)
        report = run_replay(opts, on_classification=_Printer(spans, t0),
                            on_ready=lambda: print('classifier active; playing', flush=True))
    except (ReplayError, ModelFileError, ValueError, FileNotFoundError) as exc:   # BagError is a ValueError
        print(f'av-snn demo: {exc}', file=sys.stderr)
        return EXIT_FAILED
    write_outputs(report, args.json, None)
    print(f"model {report['model']} ({report['card']})")
    print(summary(report))
    return exit_code(report)
