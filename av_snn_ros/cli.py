"""``av-snn``: one command line for the whole project.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``main(args) -> int``;
modules are imported only when their subcommand runs, so ``av-snn --help`` stays fast and a missing
optional dependency only affects the subcommand that needs it.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    'train': ('av_snn_training.cli_train', 'train a model from a recipe (checkpoints, metrics, plots)'),
    'eval': ('av_snn_training.cli_eval', 'evaluate a checkpoint or the shipped default model'),
    'export': ('av_snn_ros.tools.export', 'export a model card to ONNX (and a TensorRT engine on a GPU)'),
    'make-bag': ('av_snn_ros.replay.make_bag', 'write a ROS 2 bag from the audio-visual digits data'),
    'replay': ('av_snn_ros.replay.replay', 'replay a bag through the node graph and score it'),
    'demo': ('av_snn_ros.replay.demo', 'the embedded default demo: replay the bundled bag, print results'),
    'bench': ('av_snn_ros.tools.bench', 'side-by-side latency of backends, node latency, CPU'),
    'run': ('av_snn_ros.ros.launcher', 'start the node graph without `ros2 launch`'),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='av-snn', description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ('-h', '--help') or argv[0] not in SUBCOMMANDS:
        parser.parse_args(argv)  # prints help / the "invalid choice" error and exits
        return 2
    name, rest = argv[0], argv[1:]
    module_name, help_text = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    sub_parser = argparse.ArgumentParser(prog=f'av-snn {name}', description=help_text)
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(rest)
    return int(module.main(args) or 0)


if __name__ == '__main__':
    sys.exit(main())
