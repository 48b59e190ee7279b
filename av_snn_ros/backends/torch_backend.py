"""PyTorch inference backend: the reference runtime (CPU, or CUDA when torch has it).

It runs the registered model rebuilt from the card's weights, so it works for every model the zoo
defines, and it is the only backend that can expose internal state (spike counts) for energy estimates.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..model_card import ModelCard, ModelFileError
from .base import BackendUnavailable, InferenceBackend, InferenceResult
from .shapes import check_inputs

DEVICES = ('auto', 'cpu', 'cuda')     # auto: cuda when torch sees a GPU, else cpu


class TorchBackend(InferenceBackend):
    """Runs ``card.load_torch_model()`` under ``torch.inference_mode``."""

    name = 'torch'

    def __init__(self, card: ModelCard, threads: int | None = None, device: str = 'auto') -> None:
        super().__init__()
        try:
            import torch
        except ImportError as exc:   # pragma: no cover - torch is a hard dependency of the zoo
            raise BackendUnavailable(f'torch is not installed: {exc}') from exc
        if device not in DEVICES:
            raise ValueError(f'torch device must be one of {", ".join(DEVICES)}, got {device!r}')
        if device == 'auto':
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        if device == 'cuda' and not torch.cuda.is_available():
            raise BackendUnavailable('torch device cuda requested but CUDA is not available')
        if device == 'cuda':
            # torch lets Ampere+ GPUs run fp32 convolutions as TF32 (10-bit mantissa), which moves
            # membranes across the threshold. This backend promises fp32; the reduced-precision GPU path
            # is TensorRT (fp16, gated on accuracy). Process-wide, like set_num_threads: the node owns it.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        if threads is not None:
            if int(threads) < 1:
                raise ValueError(f'threads must be >= 1, got {threads}')
            # Process-wide in torch: the node owns its process, so this is the node's CPU budget.
            torch.set_num_threads(int(threads))
        self._torch = torch
        self.card = card
        try:
            model = card.load_torch_model()
        except (ValueError, KeyError, TypeError) as exc:   # the card names an unknown model or bad args
            raise ModelFileError(f'{card.path}: cannot build model {card.model!r}: {exc}') from exc
        self.model = model.to(device).eval()
        self.device = device
        self._heads = set(card.modality_heads)
        self.info.update({'device': device, 'threads': torch.get_num_threads(),
                          'model_file': str(card.weights), 'precision': 'fp32'})

    def infer(self, audio: np.ndarray, visual: np.ndarray) -> InferenceResult:
        audio, visual = check_inputs(audio, visual, self.card.preprocessing)
        torch = self._torch
        with torch.inference_mode():
            out = self.model(torch.from_numpy(audio).to(self.device), torch.from_numpy(visual).to(self.device))
        logits, audio_logits, visual_logits = (t.float().cpu().numpy() for t in out)
        return InferenceResult(
            logits=logits,
            audio_logits=audio_logits if 'audio' in self._heads else None,
            visual_logits=visual_logits if 'visual' in self._heads else None)

    def close(self) -> None:
        self.model = None
        if self.device == 'cuda':
            self._torch.cuda.empty_cache()


def create(card: ModelCard, threads: int | None = None, device: str = 'auto', **_options: Any) -> TorchBackend:
    """Factory for :func:`av_snn_ros.backends.base.create_backend` (other backends' options are ignored)."""
    return TorchBackend(card, threads=threads, device=device)
