"""Multi-step building blocks shared by the model families.

Every block takes and returns time-first tensors ``(T, B, C, H, W)``. Stateless layers (conv, BN,
pooling, linear) fold T into the batch and run once per window, so the only per-timestep Python loop
in a network is inside the neurons.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .neurons import LIFNode


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
    """Conv2d (no bias: BN follows) + BatchNorm2d over ``(T, B, C, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__(nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels)))

    @property
    def conv(self) -> nn.Conv2d:
        return self.module[0]


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
