"""``av-snn export``: ONNX export of registered models and model cards, parity check, card writing.

The exported graph follows :mod:`av_snn_ros.contract`: one whole window per call, the T timesteps
unrolled inside it, every membrane starting at zero (no neuron state crosses windows), static shapes
with the batch fixed at export.

We use torch's TorchScript-based exporter: our neurons are plain elementwise torch ops, so tracing
unrolls them exactly (the dynamo exporter also works but is ~10x slower and cannot emit opset 17).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import yaml

from ..backends.onnx_graph import MIN_OPSET, fold_constants
from ..config import to_dict
from ..contract import INPUT_NAMES, OUTPUT_NAMES, input_shapes
from ..model_card import CONTRACT_KEYS, ModelCard, ModelFileError, sha256_file
from ..parity import DEFAULT_TOLERANCES, compare_onnx
from ..preprocessing import PreprocessConfig

OPSET = MIN_OPSET
ONNX_FILE = 'model.onnx'
WEIGHTS_FILE = 'model.pt'
CARD_FILE = 'card.yaml'
PARITY_TOLERANCE = DEFAULT_TOLERANCES['fp32']     # torch vs onnxruntime on a real input
_CARD_OPTIONAL_EXTRA = ('training', 'metrics', 'created', 'description', 'data', 'license', 'name', 'logit_scale',
                        *CONTRACT_KEYS)


def check_compatible(model: nn.Module, pre_cfg: PreprocessConfig) -> None:
    """Raise ``ValueError`` if the model's input geometry differs from what ``pre_cfg`` produces."""
    cfg = getattr(model, 'config', None)
    if cfg is None:
        return
    problems = []
    size = tuple(getattr(cfg, 'input_size', ()))
    if size and (tuple(pre_cfg.audio_size) != size or tuple(pre_cfg.image_size) != size):
        problems.append(f'model input_size {size} but preprocessing gives audio {tuple(pre_cfg.audio_size)} '
                        f'and images {tuple(pre_cfg.image_size)}')
    if getattr(cfg, 'visual_channels', pre_cfg.image_channels) != pre_cfg.image_channels:
        problems.append(f'model visual_channels {cfg.visual_channels} but preprocessing gives '
                        f'{pre_cfg.image_channels} image channel(s)')
    if getattr(cfg, 'audio_channels', 1) != 1:
        problems.append(f'model audio_channels {cfg.audio_channels} but preprocessing gives 1')
    if problems:
        raise ValueError('model and preprocessing do not fit: ' + '; '.join(problems))


def preprocess_config_for(model: nn.Module, base: PreprocessConfig | None = None) -> PreprocessConfig:
    """``base`` (default: ``PreprocessConfig()``) resized to the model's input geometry and T."""
    base = base or PreprocessConfig()
    cfg = model.config
    size = tuple(cfg.input_size)
    return base.replace(audio_size=size, image_size=size, image_channels=cfg.visual_channels,
                        timesteps=getattr(cfg, 'timesteps', base.timesteps))


def export_onnx(model: nn.Module, pre_cfg: PreprocessConfig, path: str | Path, batch: int = 1,
                opset: int = OPSET) -> Path:
    """Export ``model`` for one window of ``pre_cfg`` (static shapes), constant-folded, validated by onnx.checker."""
    import onnx
    if opset < OPSET:
        raise ValueError(f'opset must be >= {OPSET}, got {opset}')
    check_compatible(model, pre_cfg)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    audio_shape, visual_shape = input_shapes(pre_cfg, batch)
    example = (torch.zeros(audio_shape), torch.zeros(visual_shape))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter('ignore')   # the TorchScript exporter's deprecation/tracer notes
            torch.onnx.export(model, example, str(path), input_names=list(INPUT_NAMES),
                              output_names=list(OUTPUT_NAMES), opset_version=opset, dynamo=False,
                              do_constant_folding=True)
    finally:
        model.train(was_training)
    # Fold what the TorchScript exporter leaves (static-shape arithmetic) before the file is hashed, so
    # the card pins the graph TensorRT and onnxruntime actually get (onnx_graph.fold_constants).
    unfolded = path.with_name(path.stem + '.unfolded.onnx')
    path.replace(unfolded)
    try:
        fold_constants(unfolded, path)
    finally:
        unfolded.unlink(missing_ok=True)
    proto = onnx.load(str(path))
    if _restore_unused_inputs(proto, {'audio': audio_shape, 'visual': visual_shape}):
        onnx.save(proto, str(path))
    onnx.checker.check_model(proto)
    names = [i.name for i in proto.graph.input]
    if names != list(INPUT_NAMES):
        raise RuntimeError(f'exported graph has inputs {names}, expected {list(INPUT_NAMES)}')
    return path


def _restore_unused_inputs(proto, shapes: dict[str, tuple[int, ...]]) -> bool:
    """Re-declare inputs the exporter dropped because the model ignores them (unimodal baselines).

    Every backend feeds both ``audio`` and ``visual``; an unused graph input is valid ONNX.
    """
    from onnx import TensorProto, helper
    present = {i.name: i for i in proto.graph.input}
    if all(name in present for name in INPUT_NAMES):
        return False
    inputs = [present.get(name) or helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shapes[name]))
              for name in INPUT_NAMES]
    others = [i for i in proto.graph.input if i.name not in INPUT_NAMES]
    del proto.graph.input[:]
    proto.graph.input.extend(inputs + others)
    return True


def _card_model_args(model_name: str, model_args: dict | None, labels: Sequence[str]) -> dict:
    args = dict(model_args or {})
    k = args.pop('num_classes', None)
    if k is not None and k != len(labels):
        raise ValueError(f'model_args num_classes={k} but {len(labels)} labels given')
    return args


def write_model_card(model_name: str, out_dir: str | Path, labels: Sequence[str], pre_cfg: PreprocessConfig,
                     model_args: dict | None = None, state_dict: dict | None = None,
                     extra: dict | None = None) -> Path:
    """Write ``model.pt``, ``model.onnx`` and a verified ``card.yaml`` into ``out_dir``; return the card path.

    ``state_dict`` defaults to a freshly initialised model's (an untrained card, for tests and demos).
    ``extra`` adds card keys such as ``training``, ``metrics``, ``description``, ``data``, ``name``.
    """
    from ..models.registry import create_model
    labels = list(labels)
    if not labels or not all(isinstance(x, str) and x for x in labels):
        raise ValueError('labels must be a non-empty list of non-empty strings')
    extra = dict(extra or {})
    bad = sorted(set(extra) - set(_CARD_OPTIONAL_EXTRA))
    if bad:
        raise ValueError(f'unsupported extra card key(s) {", ".join(bad)}; allowed: {", ".join(_CARD_OPTIONAL_EXTRA)}')
    args = _card_model_args(model_name, model_args, labels)
    model = create_model(model_name, num_classes=len(labels), **args)
    check_compatible(model, pre_cfg)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    model.eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / WEIGHTS_FILE
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, weights)
    onnx_path = export_onnx(model, pre_cfg, out_dir / ONNX_FILE)
    card = {
        'name': extra.pop('name', model_name),
        'model': model_name,
        'model_args': args,
        'labels': labels,
        'preprocessing': to_dict(pre_cfg),
        'weights': WEIGHTS_FILE,
        'weights_sha256': sha256_file(weights),
        'onnx': ONNX_FILE,
        'onnx_sha256': sha256_file(onnx_path),
        'modality_heads': list(model.modality_heads),
        'created': extra.pop('created', _dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')),
        **extra,
    }
    path = out_dir / CARD_FILE
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    ModelCard.load(path).verified_onnx()   # fail here, not at robot start-up, if anything is off
    return path


# ----------------------------------------------------------------------------------------------- CLI

def real_window(pre_cfg: PreprocessConfig, data_root: str | Path, batch: int = 1
                ) -> tuple[np.ndarray, np.ndarray]:
    """One real spoken-digit + MNIST window per batch item (digit ``i % 10``), preprocessed."""
    from scipy.io import wavfile

    from ..preprocessing import fit_length, pcm_to_float, preprocess_window, resample
    root = Path(data_root)
    mnist = np.load(root / 'mnist' / 'mnist.npz')
    xs, ys = mnist['x_test'], mnist['y_test']
    audios, visuals = [], []
    for i in range(batch):
        digit = i % 10
        wav = root / 'fsdd' / 'recordings' / f'{digit}_george_0.wav'
        sr, pcm = wavfile.read(wav)
        enc = 'S16LE' if pcm.dtype == np.int16 else 'F32LE'
        samples = resample(pcm_to_float(pcm.astype('<i2' if enc == 'S16LE' else '<f4'), enc, 1), sr,
                           pre_cfg.sample_rate)
        image = xs[int(np.flatnonzero(ys == digit)[0])]
        a, v = preprocess_window(fit_length(samples, pre_cfg.window_samples), [image] * pre_cfg.timesteps,
                                 pre_cfg)
        audios.append(a)
        visuals.append(v)
    return np.stack(audios, axis=1), np.stack(visuals, axis=1)      # (T, B, ...)


def _update_card(card_path: Path, onnx_path: Path) -> None:
    """Set the card's ``onnx`` + ``onnx_sha256`` keys, keeping every other key as it was."""
    with open(card_path) as fh:
        data = yaml.safe_load(fh)
    data['onnx'] = os.path.relpath(onnx_path, card_path.parent)
    data['onnx_sha256'] = sha256_file(onnx_path)
    tmp = card_path.with_suffix('.yaml.tmp')
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, card_path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('--card', type=Path, help='model card (card.yaml or its folder) to export')
    src.add_argument('--model', help='registered model name: write a fresh, untrained card into --out')
    parser.add_argument('--out', type=Path, help='output folder (default: beside the card)')
    parser.add_argument('--engine', action='store_true', help='also build a TensorRT engine (needs a GPU)')
    parser.add_argument('--opset', type=int, default=OPSET, help=f'ONNX opset (>= {OPSET})')
    parser.add_argument('--data-root', type=Path, default=None,
                        help='real data for the parity check (default: the shared data folder)')


def _parity_input(pre_cfg: PreprocessConfig, data_root: Path | None) -> tuple[np.ndarray, np.ndarray, str]:
    from ..paths import default_data_root
    root = data_root or default_data_root()
    if root is not None and (Path(root) / 'mnist' / 'mnist.npz').is_file():
        a, v = real_window(pre_cfg, root)
        return a, v, f'real window from {root}'
    rng = np.random.default_rng(0)
    a_shape, v_shape = input_shapes(pre_cfg)
    return (rng.standard_normal(a_shape).astype(np.float32), rng.standard_normal(v_shape).astype(np.float32),
            'random window (no data root found)')


def main(args: argparse.Namespace) -> int:
    if args.model:
        if args.out is None:
            print('error: --model needs --out DIR')
            return 2
        from ..models.registry import create_model
        probe = create_model(args.model)
        pre_cfg = preprocess_config_for(probe)
        labels = [str(i) for i in range(probe.config.num_classes)]
        card_path = write_model_card(args.model, args.out, labels, pre_cfg,
                                     extra={'description': f'untrained {args.model} (av-snn export --model)'})
        print(f'wrote untrained model card {card_path}')
    else:
        card_path = args.card / CARD_FILE if args.card.is_dir() else args.card
        try:
            card = ModelCard.load(card_path)
            model = card.load_torch_model()
        except ModelFileError as exc:
            print(f'error: {exc}')
            return 1
        out_dir = args.out or card_path.parent
        onnx_path = export_onnx(model, card.preprocessing, Path(out_dir) / ONNX_FILE, opset=args.opset)
        _update_card(card_path, onnx_path)
        print(f'wrote {onnx_path} and updated {card_path}')
    card = ModelCard.load(card_path)
    model = card.load_torch_model()
    audio, visual, what = _parity_input(card.preprocessing, args.data_root)
    parity = compare_onnx(card.verified_onnx(), model, audio, visual, PARITY_TOLERANCE)
    ok = parity['passed']
    print(f'parity on a {what}: max |torch - onnxruntime| = {parity["max_abs_diff"]:.3g}, '
          f'argmax equal: {parity["argmax_equal"]} -> {"OK" if ok else "MISMATCH"}')
    if not ok:
        return 1
    if args.engine:
        from ..backends.base import BackendUnavailable
        try:
            from ..backends.tensorrt_backend import build_engine_from_card
            engine = build_engine_from_card(card, out_dir=args.out)
        except (ImportError, BackendUnavailable) as exc:
            print(f'error: cannot build a TensorRT engine here: {exc}')
            return 1
        except Exception as exc:  # TensorRT raises its own types; report, do not trace back
            print(f'error: TensorRT engine build failed: {type(exc).__name__}: {exc}')
            return 1
        print(f'wrote TensorRT engine {engine}')
    return 0
