"""Multi-step building blocks shared by the model families.

Every block takes and returns time-first tensors ``(T, B, C, H, W)``. Stateless layers (conv, BN,
pooling, linear) fold T into the batch and run once per window, so the only per-timestep Python loop
in a network is inside the neurons.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from spikingjelly.activation_based.neuron import BaseNode

from . import native_kernels
from .neurons import LIFNode, fast_paths_allowed


@dataclass(frozen=True)
class NeuronConfig:
    """How a family builds its LIF neurons (one object so blocks do not take ten arguments)."""

    tau: float = 2.0
    decay_input: bool = False
    v_threshold: float = 1.0
    v_reset: float | None = None          # None = soft reset (MISNet Eq. 2); 0.0 = hard reset (S-CMRL)
    surrogate: str = 'sigmoid'
    surrogate_alpha: float = 4.0
    detach_reset: bool = False

    def lif(self) -> LIFNode:
        return LIFNode(tau=self.tau, decay_input=self.decay_input, v_threshold=self.v_threshold,
                       v_reset=self.v_reset, surrogate=self.surrogate,
                       surrogate_alpha=self.surrogate_alpha, detach_reset=self.detach_reset)


class SeqModule(nn.Module):
    """Apply a stateless module to ``(T, B, ...)`` by folding T into the batch."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        y = self.module(x_seq.flatten(0, 1))                    # (T*B, ...)
        return y.unflatten(0, x_seq.shape[:2])                  # (T, B, ...)


class SeqConvBN(SeqModule):
    """Conv (no bias: BN follows) + BatchNorm over ``(T, B, C, H, W)`` (2-D) or ``(T, B, C, N)`` (1-D).

    Inference (eval mode, autograd off, not tracing) folds BN into the conv weights once per weight
    version, so a window costs one conv; training, gradient recording and ONNX export run the two
    layers as written (onnxruntime folds them itself). 2-D activations are kept channels-last, the
    layout where CPU convolution and pooling are fastest; values do not depend on the layout.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 dims: int = 2, bias: bool = False) -> None:
        if dims not in (1, 2):
            raise ValueError(f'dims must be 1 or 2, got {dims}')
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
        super().__init__(nn.Sequential(
            conv(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=bias),
            norm(out_channels)))
        self._fused: tuple | None = None
        self._native: tuple | None = None     # (the _fused it was made from, weight as the C kernel reads it)

    @property
    def conv(self) -> nn.Module:
        return self.module[0]

    @property
    def bn(self) -> nn.Module:
        return self.module[1]

    def _fused_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        conv, bn = self.conv, self.bn
        tensors = (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
        key = tuple((id(t), t._version) if t is not None else None for t in tensors)
        if self._fused is None or self._fused[0] != key:
            inv_std = torch.rsqrt(bn.running_var + bn.eps)
            gain = bn.weight * inv_std if bn.affine else inv_std
            shift = bn.bias if bn.affine else torch.zeros_like(gain)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(gain)
            weight = conv.weight * gain.reshape(-1, *([1] * (conv.weight.dim() - 1)))
            if conv.weight.dim() == 4:
                if weight.shape[1] == 1:
                    weight = F.pad(weight, (0, 0, 0, 0, 0, 1))      # see forward: one input channel
                weight = weight.contiguous(memory_format=torch.channels_last)
            self._fused = (key, weight, shift + (bias - bn.running_mean) * gain)
        return self._fused[1], self._fused[2]

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        x = x_seq.flatten(0, 1)                                         # (T*B, C, ...)
        fast = fast_paths_allowed()
        if x.dim() == 4 and fast:
            x = x.contiguous(memory_format=torch.channels_last)
        bn = self.bn
        if self.training or torch.is_grad_enabled() or not fast or not bn.track_running_stats:
            y = self.module(x)
        else:
            weight, bias = self._fused_params()
            y = self._native_forward(x, bias) if x.dim() == 4 and native_kernels.active() else None
            if y is not None:
                return y.unflatten(0, x_seq.shape[:2])
            if x.dim() == 4 and x.shape[1] == 1:
                # oneDNN has no fast channels-last kernel for one input channel: at 128x128 it runs
                # ~10x slower and its NCHW output then costs as much again to make channels-last.
                # An all-zero second channel (weights padded alike) adds exact zeros to every sum.
                x = F.pad(x, (0, 0, 0, 0, 0, 1)).contiguous(memory_format=torch.channels_last)
            y = self.conv._conv_forward(x, weight, bias)
        if fast and y.dim() == 4 and not y.is_contiguous(memory_format=torch.channels_last):
            y = y.contiguous(memory_format=torch.channels_last)     # 1-channel inputs come out NCHW
        return y.unflatten(0, x_seq.shape[:2])

    def _native_forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor | None:
        """The event-driven convolution of ``native_kernels`` when it applies and pays, else None."""
        conv = self.conv
        k = conv.kernel_size
        if (conv.in_channels < native_kernels.MIN_IN_CHANNELS or conv.groups != 1
                or conv.stride != (1, 1) or conv.dilation != (1, 1)
                or conv.padding != (k[0] // 2, k[1] // 2) or conv.padding_mode != 'zeros'):
            return None
        if self._native is None or self._native[0] is not self._fused:
            self._native = (self._fused, native_kernels.conv_weight_layout(self._fused[1]))
        return native_kernels.spike_conv2d(x, self._native[1], bias)

    def train(self, mode: bool = True) -> 'SeqConvBN':
        self._fused = self._native = None          # drop the folded copies when switching modes
        return super().train(mode)


class ConvBNLIF(nn.Module):
    """Conv2D -> BN -> LIF (MISNet Eq. 3 and each half of a SEW block)."""

    def __init__(self, in_channels: int, out_channels: int, neuron: NeuronConfig, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv_bn = SeqConvBN(in_channels, out_channels, kernel_size)
        self.lif = neuron.lif()

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.lif(self.conv_bn(x_seq))


class SEWBlock(nn.Module):
    """Spike-element-wise residual block (Fang et al. 2021, ADD connection; MISNet Eq. 4).

    ``O = S + LIF(BN(Conv(LIF(BN(Conv(S))))))``; the sum of two spike maps lies in {0, 1, 2}.
    """

    def __init__(self, channels: int, neuron: NeuronConfig) -> None:
        super().__init__()
        self.body = nn.Sequential(ConvBNLIF(channels, channels, neuron), ConvBNLIF(channels, channels, neuron))

    def forward(self, s_seq: torch.Tensor) -> torch.Tensor:
        return s_seq + self.body(s_seq)


class SeqMaxPool(SeqModule):
    """2-D max pooling over ``(T, B, C, H, W)``; max of spikes is still a spike."""

    def __init__(self, kernel_size: int = 2, stride: int = 2) -> None:
        super().__init__(nn.MaxPool2d(kernel_size, stride))


def scaled_channels(channels: tuple[int, ...], width: float) -> tuple[int, ...]:
    """Channel counts times a width multiplier, at least 1 each (rounded to the nearest integer)."""
    if not width > 0:
        raise ValueError(f'width must be > 0, got {width}')
    return tuple(max(1, int(round(c * width))) for c in channels)


def calibrate_batchnorm(model: nn.Module, batches, reset: bool = True) -> nn.Module:
    """Set every BatchNorm's running statistics to the exact average over ``batches``.

    ``batches`` yields ``(audio, visual)`` pairs. A fresh spiking network's BN statistics (mean 0,
    variance 1) do not match its currents, so spikes die out after a few layers and every logit is 0;
    calibrating makes a fresh model's outputs (and energy estimates) meaningful. Weights are untouched;
    the model is left in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        if reset:
            m.reset_running_stats()
        m.momentum = None                      # cumulative average over all calibration batches
    model.train()
    try:
        with torch.no_grad():
            for audio, visual in batches:
                model(audio, visual)
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.eval()
    return model


class SpikingAVModel(nn.Module):
    """Shared plumbing of the audio-visual models: neuron-state reset and the input contract check.

    Subclasses set ``self.config`` (with ``input_size``), call :meth:`collect_neurons` at the end of
    ``__init__`` and implement ``forward_train``; ``forward`` is the exported inference contract.
    """

    def forward(self, audio: torch.Tensor, visual: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, audio_logits, visual_logits)``, each ``(B, K)`` averaged over T."""
        out = self.forward_train(audio, visual)
        return out['logits'], out['audio_logits'], out['visual_logits']

    def collect_neurons(self) -> None:
        self._neurons = [m for m in self.modules() if isinstance(m, BaseNode)]

    def reset_state(self) -> None:
        """Reset every neuron's membrane (done at the start of each forward: one call = one window)."""
        for neuron in self._neurons:
            neuron.reset()

    def _check(self, name: str, x: torch.Tensor, channels: int) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f'{name} must be a torch.Tensor, got {type(x).__name__}')
        expected = (channels, *self.config.input_size)
        if x.dim() != 5 or tuple(x.shape[2:]) != expected:
            raise ValueError(f'{name} must be (T, B, {", ".join(map(str, expected))}), got {tuple(x.shape)}')
