"""onnxruntime inference backend (CPU execution provider): the default on machines without TensorRT.

It runs the card's hash-verified ONNX export (one whole window per call, T unrolled in the graph).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..contract import INPUT_NAMES, check_inputs, feed, outputs_by_name
from ..model_card import ModelCard, ModelFileError
from .base import (MAX_THREADS, BackendUnavailable, InferenceBackend, InferenceResult, check_threads, option,
                   options_from_mapping)

PROVIDER = 'CPUExecutionProvider'
#: onnxruntime's log severity for session creation: 3 = errors only (its warnings are not ours to show).
_ORT_LOG_ERRORS_ONLY = 3


@dataclass(frozen=True)
class OnnxRuntimeOptions:
    """The onnxruntime backend's options (the node's ``backend.*`` parameters of the same names)."""

    threads: int | None = option(None, 'CPU threads for torch / onnxruntime (0: library default).', unset=0,
                                 range=(0, MAX_THREADS))
    allow_spinning: bool = option(True, 'onnxruntime: idle intra-op threads spin (fastest on idle cores) '
                                  'instead of sleeping (kinder to cores shared with drivers).')

    def __post_init__(self) -> None:
        check_threads(self.threads)

    @classmethod
    def from_options(cls, values: Mapping[str, Any]) -> 'OnnxRuntimeOptions':
        """Validated options from a mapping of this backend's keys (None: unset)."""
        return options_from_mapping(cls, values)


#: the options class :func:`av_snn_ros.backends.base.create_backend` validates for this backend
Options = OnnxRuntimeOptions


def import_onnxruntime():
    """``import onnxruntime``, or :class:`BackendUnavailable` saying how to get it."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable(f'onnxruntime is not installed ({exc}); pip install onnxruntime') from exc
    return ort


def create_session(path: str | Path, threads: int | None = None, *, allow_spinning: bool = True,
                   optimized_model_path: str | Path | None = None, basic_optimizations_only: bool = False):
    """The one place an ``onnxruntime.InferenceSession`` is built (CPU provider, errors-only logging).

    Args:
        path: the ONNX file.
        threads: intra-op threads (None: onnxruntime's default); inter-op is 1 (one graph, no
            independent branches worth a second pool).
        allow_spinning: ``False`` lets idle intra-op threads sleep instead of spinning (shared cores).
        optimized_model_path: also write the optimised graph there (used to fold constants).
        basic_optimizations_only: only semantics-preserving rewrites that keep standard ONNX operators.

    Raises :class:`BackendUnavailable` without onnxruntime; onnxruntime's own errors propagate.
    """
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = _ORT_LOG_ERRORS_ONLY
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    check_threads(threads)
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    if not allow_spinning:
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    if basic_optimizations_only:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    return ort.InferenceSession(str(path), sess_options=options, providers=[PROVIDER])


def run_session(session, audio: np.ndarray, visual: np.ndarray) -> dict[str, np.ndarray]:
    """One call of ``session`` on a window batch; outputs keyed by the contract's names.

    A graph whose inputs or outputs lost the contract's names is fed and read in contract order.
    """
    in_names = [i.name for i in session.get_inputs()]
    inputs = feed(audio, visual) if set(INPUT_NAMES) == set(in_names) else dict(zip(in_names, (audio, visual)))
    names = [o.name for o in session.get_outputs()]
    return outputs_by_name(session.run(names, inputs), names)


class OnnxRuntimeBackend(InferenceBackend):
    """One ``onnxruntime.InferenceSession`` on the CPU provider."""

    name = 'onnxruntime'

    def __init__(self, card: ModelCard, threads: int | None = None, allow_spinning: bool = True) -> None:
        super().__init__()
        import_onnxruntime()
        path = card.verified_onnx()                        # ModelFileError if missing / tampered
        try:
            self.session = create_session(path, threads, allow_spinning=allow_spinning)
        except (BackendUnavailable, ValueError):
            raise
        except Exception as exc:   # onnxruntime raises its own pybind exception types
            raise ModelFileError(f'onnxruntime cannot load {path}: {exc}') from exc
        inputs = [i.name for i in self.session.get_inputs()]
        missing = [n for n in INPUT_NAMES if n not in inputs]
        if missing:
            raise ModelFileError(f'{path}: graph inputs {inputs} lack {missing}; re-export with `av-snn export`')
        self._outputs = [o.name for o in self.session.get_outputs()]
        batch = self.session.get_inputs()[inputs.index('audio')].shape[1]
        self._static_batch = batch if isinstance(batch, int) else None
        self.card = card
        self._heads = set(card.modality_heads)
        self.info.update({'device': 'cpu', 'providers': self.session.get_providers(),
                          'threads': int(threads) if threads is not None else 'default', 'model_file': str(path),
                          'allow_spinning': allow_spinning,
                          'precision': 'fp32'})

    def _run(self, audio: np.ndarray, visual: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self._outputs, feed(audio, visual))

    def infer(self, audio: np.ndarray, visual: np.ndarray) -> InferenceResult:
        audio, visual = check_inputs(audio, visual, self.card.preprocessing)
        batch = audio.shape[1]
        if self._static_batch is None or batch == self._static_batch:
            outs = self._run(audio, visual)
        elif self._static_batch == 1:
            # The export fixes the batch at one window; run a larger batch window by window.
            per_item = [self._run(audio[:, b:b + 1], visual[:, b:b + 1]) for b in range(batch)]
            outs = [np.concatenate(parts, axis=0) for parts in zip(*per_item)]
        else:
            raise ValueError(f'the ONNX graph takes batch {self._static_batch}, got {batch}')
        by_name = dict(zip(self._outputs, outs))
        logits = by_name.get('logits', outs[0])
        return InferenceResult(
            logits=logits,
            audio_logits=by_name.get('audio_logits') if 'audio' in self._heads else None,
            visual_logits=by_name.get('visual_logits') if 'visual' in self._heads else None)

    def close(self) -> None:
        self.session = None


def create(card: ModelCard, options: OnnxRuntimeOptions | None = None) -> OnnxRuntimeBackend:
    """Factory for :func:`av_snn_ros.backends.base.create_backend`."""
    options = options or OnnxRuntimeOptions()
    return OnnxRuntimeBackend(card, threads=options.threads, allow_spinning=options.allow_spinning)
