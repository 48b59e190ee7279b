"""onnxruntime inference backend (CPU execution provider): the default on machines without TensorRT.

It runs the card's hash-verified ONNX export (one whole window per call, T unrolled in the graph).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..model_card import ModelCard, ModelFileError
from .base import BackendUnavailable, InferenceBackend, InferenceResult
from .shapes import check_inputs

PROVIDER = 'CPUExecutionProvider'
INPUT_NAMES = ('audio', 'visual')
OUTPUT_NAMES = ('logits', 'audio_logits', 'visual_logits')
#: onnxruntime's log severity for session creation: 3 = errors only (its warnings are not ours to show).
_ORT_LOG_ERRORS_ONLY = 3


class OnnxRuntimeBackend(InferenceBackend):
    """One ``onnxruntime.InferenceSession`` on the CPU provider."""

    name = 'onnxruntime'

    def __init__(self, card: ModelCard, threads: int | None = None) -> None:
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable(f'onnxruntime is not installed ({exc}); pip install onnxruntime') from exc
        path = card.verified_onnx()                        # ModelFileError if missing / tampered
        options = ort.SessionOptions()
        options.log_severity_level = _ORT_LOG_ERRORS_ONLY
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1                   # one graph, no independent branches worth it
        if threads is not None:
            if int(threads) < 1:
                raise ValueError(f'threads must be >= 1, got {threads}')
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=[PROVIDER])
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
                          'threads': options.intra_op_num_threads or 'default', 'model_file': str(path),
                          'precision': 'fp32'})

    def _run(self, audio: np.ndarray, visual: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self._outputs, {'audio': audio, 'visual': visual})

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


def create(card: ModelCard, threads: int | None = None, **_options: Any) -> OnnxRuntimeBackend:
    """Factory for :func:`av_snn_ros.backends.base.create_backend` (other backends' options are ignored)."""
    return OnnxRuntimeBackend(card, threads=threads)
