"""``av-snn run``: start the node graph in one process, without ``ros2 launch``.

    av-snn run                                  # the classifier alone, config/robot.yaml
    av-snn run --demo                           # microphone + camera + classifier, config/demo.yaml
    av-snn run --remap image:=/camera/image_raw --remap audio:=/mic/audio --namespace robot1
    av-snn run -p model.card:=/path/card.yaml -p backend.name:=onnxruntime
    av-snn run --card models/emotion --demo     # an audio-only card: microphone only, no camera needed

All nodes spin on one single-threaded executor (`classifier_node.make_executor`). The classifier is configured and activated at start
(``--no-autostart`` leaves that to a lifecycle manager). Remaps apply to every node, so the drivers and
the classifier stay connected. Ctrl-C shuts everything down cleanly. Without a camera or microphone,
``--demo`` exits with one message naming what is missing.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

_REMAP_RE = re.compile(r'^[^:=\s]+:=[^:=\s]+$')
_PARAM_RE = re.compile(r'^[A-Za-z_][A-Za-z0-9_.]*:=.*$')
LOG_LEVELS = ('debug', 'info', 'warn', 'error', 'fatal')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--classifier-only', action='store_true',
                      help='run only the classifier (the default); sensors come from elsewhere')
    mode.add_argument('--demo', action='store_true', help='also run the microphone and camera drivers')
    parser.add_argument('--params-file', type=Path, default=None,
                        help='ROS parameter file (default: config/demo.yaml with --demo, else config/robot.yaml)')
    parser.add_argument('--remap', action='append', default=[], metavar='FROM:=TO',
                        help='topic remap for every node, e.g. image:=/camera/image_raw (repeatable)')
    parser.add_argument('--namespace', default='', help='namespace of all nodes')
    parser.add_argument('--card', type=Path, default=None, metavar='DIR',
                        help='model card (card.yaml or its folder); same as -p model.card:=DIR. With --demo, '
                             'a card without the visual modality starts no camera')
    parser.add_argument('-p', '--param', action='append', default=[], metavar='NAME:=VALUE',
                        help='classifier parameter override, e.g. backend.name:=onnxruntime (repeatable)')
    parser.add_argument('--no-autostart', action='store_true',
                        help='leave the classifier unconfigured for a lifecycle manager to drive')
    parser.add_argument('--log-level', default='info', choices=LOG_LEVELS)


def _validate(args: argparse.Namespace) -> Path:
    for item in args.remap:
        if not _REMAP_RE.match(item):
            raise ValueError(f'bad --remap {item!r}: use FROM:=TO, e.g. image:=/camera/image_raw')
    for item in args.param:
        if not _PARAM_RE.match(item):
            raise ValueError(f'bad --param {item!r}: use NAME:=VALUE, e.g. backend.name:=torch')
    if args.params_file is not None:
        path = Path(args.params_file)
    else:
        from ..paths import config_dir
        path = config_dir() / ('demo.yaml' if args.demo else 'robot.yaml')
    if not path.is_file():
        raise ValueError(f'parameter file not found: {path}')
    return path


def _uses_camera(card: Path | None) -> bool:
    """Whether the card given with ``--card`` takes images (no card given: the default model does)."""
    if card is None:
        return True
    from ..model_card import ModelCard, ModelFileError
    try:
        return 'visual' in ModelCard.load(card, verify=False).modalities
    except ModelFileError:
        return True          # the classifier's configure reports the card's problem


def main(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.logging import get_logger

    from . import process
    from .classifier_node import AvClassifierNode, make_executor, shutdown_node, start
    from .drivers import DeviceError

    log = get_logger('av_snn_run')
    try:
        params_file = _validate(args)
    except ValueError as exc:
        log.error(str(exc))
        return 2
    common = ['--ros-args', '--params-file', str(params_file), '--log-level', args.log_level]
    for item in args.remap:
        common += ['-r', item]
    classifier_args = list(common)
    if not args.no_autostart:
        classifier_args += ['-p', 'autostart:=true']
    if args.card is not None:
        classifier_args += ['-p', f'model.card:={args.card}']
    for item in args.param:
        classifier_args += ['-p', item]

    stop = process.init([])
    drivers: list = []
    classifier = None
    executor = make_executor()
    code = 0
    try:
        if args.demo:
            from .camera_node import CameraNode
            from .microphone_node import MicrophoneNode
            missing = []
            camera = _uses_camera(args.card)
            for cls in (MicrophoneNode, CameraNode) if camera else (MicrophoneNode,):
                node = cls(cli_args=common, namespace=args.namespace)
                drivers.append(node)
                try:
                    node.start()
                except DeviceError as exc:
                    missing.append(str(exc))
            if missing:   # one message naming everything that is missing, not the first failure only
                needs = 'a microphone and a camera' if camera else 'a microphone'
                raise DeviceError(f'--demo needs {needs}:\n  ' + '\n  '.join(missing))
        classifier = AvClassifierNode(cli_args=classifier_args, namespace=args.namespace)
        for node in (*drivers, classifier):
            executor.add_node(node)
        if classifier.autostart:
            if not start(classifier):
                log.error('the classifier failed to start (see the error above)')
                return 1
        else:
            log.info(f'{classifier.get_fully_qualified_name()} is unconfigured: drive it with its '
                     '~/change_state service')
        process.spin(executor, stop)
    except (DeviceError, ValueError) as exc:
        log.error(str(exc))
        code = 1
    finally:
        if classifier is not None:
            shutdown_node(classifier)
        for node in drivers:
            node.stop()
            node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
        stop.finish()
    return code
