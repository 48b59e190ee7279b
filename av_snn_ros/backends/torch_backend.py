"""PyTorch inference backend: the reference runtime (CPU, or CUDA when torch has it).

It runs the registered model rebuilt from the card's weights, so it works for every model the zoo
defines, and it is the only backend that can expose internal state (spike counts) for energy estimates.

On CUDA a window is replayed from a captured CUDA graph (one per input shape): at batch 1 the
multi-step neurons issue a few small kernels per timestep and layer, and launching them from Python
cost more than running them (7-10 ms per window on an H200 for models of 0.1 to 34 GFLOP). A model
with forward hooks attached (the energy meter counts spikes in hooks, which a replay would skip) and
any shape or capture failure run eagerly instead; ``info['cuda_graph']`` says which.

On the CPU, ``native_kernels=True`` runs spiking convolutions event-driven and the neurons in one pass
per layer (``models/native_kernels.py``, compiled from C on first use): MISNet-XS at 128x128 3.5x
faster than the reference eager torch, same outputs. A missing C compiler is a start-up error.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from ..contract import check_inputs
from ..model_card import ModelCard, ModelFileError
from .base import (MAX_THREADS, BackendUnavailable, InferenceBackend, InferenceResult, check_threads, option,
                   options_from_mapping)

DEVICES = ('auto', 'cpu', 'cuda')     # auto: cuda when torch sees a GPU, else cpu
#: input shapes with a captured graph at most (each holds its own memory pool); others run eagerly
MAX_CUDA_GRAPHS = 4
#: eager passes on a side stream before a capture (lazy initialisation must not happen while capturing)
CAPTURE_WARMUP_PASSES = 3

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TorchOptions:
    """The torch backend's options (the node's ``backend.*`` parameters of the same names)."""

    threads: int | None = option(None, 'CPU threads for torch / onnxruntime (0: library default).', unset=0,
                                 range=(0, MAX_THREADS))
    device: str = option('auto', 'torch backend device: auto (cuda when torch sees a GPU), cpu or cuda. With '
                         'backend auto and no TensorRT, a GPU makes the node time onnxruntime (CPU) against '
                         'torch (CUDA) at start-up and keep the faster; cpu rules the GPU out.', choices=DEVICES)
    cuda_graph: bool = option(True, 'torch backend on CUDA: replay each window from a captured CUDA graph '
                              '(eager while forward hooks, e.g. the energy meter, are attached).')
    native_kernels: bool = option(False, 'torch backend on the CPU: event-driven spiking convolutions and '
                                  'one-pass neurons compiled from C on first use (needs a C compiler; MISNet-XS '
                                  '128x128 3.5x faster than eager torch, same outputs). Needs backend.name torch.')

    def __post_init__(self) -> None:
        check_threads(self.threads)
        if self.device not in DEVICES:
            raise ValueError(f'torch device must be one of {", ".join(DEVICES)}, got {self.device!r}')

    @classmethod
    def from_options(cls, values: Mapping[str, Any]) -> 'TorchOptions':
        """Validated options from a mapping of this backend's keys (None: unset)."""
        return options_from_mapping(cls, values)


#: the options class :func:`av_snn_ros.backends.base.create_backend` validates for this backend
Options = TorchOptions


class TorchBackend(InferenceBackend):
    """Runs ``card.load_torch_model()`` under ``torch.inference_mode``."""

    name = 'torch'

    def __init__(self, card: ModelCard, threads: int | None = None, device: str = 'auto',
                 cuda_graph: bool = True, native_kernels: bool = False) -> None:
        super().__init__()
        try:
            import torch
        except ImportError as exc:   # pragma: no cover - torch is a hard dependency of the zoo
            raise BackendUnavailable(f'torch is not installed: {exc}') from exc
        TorchOptions(threads=threads, device=device)      # the one validation of these values
        if device == 'auto':
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        if device == 'cuda' and not torch.cuda.is_available():
            raise BackendUnavailable('torch device cuda requested but CUDA is not available')
        # what each window runs inside: the native kernels' scope, or nothing
        self._kernels: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
        native_lib = None
        if native_kernels and device != 'cpu':
            # CPU kernels: on the GPU the CUDA graph is the fast path (said in info and the log)
            log.warning('torch backend: native_kernels ignored on device %s (they are CPU kernels)', device)
        elif native_kernels:
            from ..models import native_kernels as native
            try:
                native_lib = native.load()
            except native.NativeKernelsUnavailable as exc:
                raise BackendUnavailable(f'native_kernels requested but unavailable: {exc}') from exc
            self._kernels = native.enabled
        if device == 'cuda':
            # torch lets Ampere+ GPUs run fp32 convolutions as TF32 (10-bit mantissa), which moves
            # membranes across the threshold. This backend promises fp32; the reduced-precision GPU path
            # is TensorRT (fp16, gated on accuracy). Process-wide, like set_num_threads: the node owns it.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        if threads is not None:
            # Process-wide in torch: the node owns its process, so this is the node's CPU budget.
            torch.set_num_threads(int(threads))
        self._torch = torch
        self.card = card
        if device == 'cpu':
            from .heap import retain_freed_memory
            self.info['heap'] = retain_freed_memory()
        try:
            model = card.load_torch_model()
        except (ValueError, KeyError, TypeError) as exc:   # the card names an unknown model or bad args
            raise ModelFileError(f'{card.path}: cannot build model {card.model!r}: {exc}') from exc
        self.model = model.to(device).eval()
        self.device = device
        self._heads = set(card.modality_heads)
        # shape -> (graph, static audio, static visual, static outputs); None once capture failed
        self._graphs: dict[tuple, tuple] | None = {} if device == 'cuda' and cuda_graph else None
        self.info.update({'device': device, 'threads': torch.get_num_threads(),
                          'model_file': str(card.weights), 'precision': 'fp32'})
        if device == 'cuda':
            self.info['cuda_graph'] = 'on' if cuda_graph else 'off: cuda_graph disabled'
        if native_lib is not None:
            self.info['native_kernels'] = f'on ({native_lib._name})'
        else:
            self.info['native_kernels'] = 'off' if not native_kernels else f'off: device {device}'

    def infer(self, audio: np.ndarray, visual: np.ndarray) -> InferenceResult:
        audio, visual = check_inputs(audio, visual, self.card.preprocessing)
        torch = self._torch
        with torch.inference_mode(), self._kernels():
            out = self._replay(audio, visual) if self._graph_usable(audio.shape, visual.shape) else None
            if out is None:
                out = self.model(torch.from_numpy(audio).to(self.device),
                                 torch.from_numpy(visual).to(self.device))
        logits, audio_logits, visual_logits = (t.float().cpu().numpy() for t in out)
        return InferenceResult(
            logits=logits,
            audio_logits=audio_logits if 'audio' in self._heads else None,
            visual_logits=visual_logits if 'visual' in self._heads else None)

    # ------------------------------------------------------------------------------- CUDA graphs
    def _graph_usable(self, a_shape: tuple, v_shape: tuple) -> bool:
        if self._graphs is None:
            return False
        if any(m._forward_hooks or m._forward_pre_hooks for m in self.model.modules()):
            return False                     # hooks run in Python: a replay would skip them
        return (a_shape, v_shape) in self._graphs or len(self._graphs) < MAX_CUDA_GRAPHS

    def _replay(self, audio: np.ndarray, visual: np.ndarray):
        """The model's outputs for this window from the shape's CUDA graph (captured on first use)."""
        torch = self._torch
        key = (audio.shape, visual.shape)
        entry = self._graphs.get(key)
        if entry is None:
            try:
                entry = self._graphs[key] = self._capture(audio.shape, visual.shape)
            except Exception as exc:  # noqa: BLE001 - any capture failure: eager from now on, said once
                self._graphs = None
                self.info['cuda_graph'] = f'off: capture failed ({type(exc).__name__}: {exc})'.splitlines()[0]
                log.warning('torch backend: %s; running eagerly', self.info['cuda_graph'])
                return None
        graph, static_audio, static_visual, outputs = entry
        static_audio.copy_(torch.from_numpy(audio))
        static_visual.copy_(torch.from_numpy(visual))
        graph.replay()
        return outputs           # read (copied to the host) before the next replay overwrites them

    def _capture(self, a_shape: tuple, v_shape: tuple) -> tuple:
        torch = self._torch
        static_audio = torch.zeros(a_shape, device=self.device)
        static_visual = torch.zeros(v_shape, device=self.device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(CAPTURE_WARMUP_PASSES):
                self.model(static_audio, static_visual)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = self.model(static_audio, static_visual)
        return graph, static_audio, static_visual, outputs

    def close(self) -> None:
        self.model = None
        self._graphs = None
        if self.device == 'cuda':
            self._torch.cuda.empty_cache()


def create(card: ModelCard, options: TorchOptions | None = None) -> TorchBackend:
    """Factory for :func:`av_snn_ros.backends.base.create_backend`."""
    options = options or TorchOptions()
    return TorchBackend(card, threads=options.threads, device=options.device, cuda_graph=options.cuda_graph,
                        native_kernels=options.native_kernels)
