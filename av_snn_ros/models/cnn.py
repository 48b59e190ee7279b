"""A non-spiking CNN baseline with the spiking encoders' stages, to show the SNN's accuracy/energy trade.

Same front end and input contract as every model here (``(T, B, C, H, W)`` time-first slices), same
channels/cells/width fields as MISNet's backbone, but ReLU instead of LIF and no state over time: the T
slices of a window are laid side by side (``(B, C, H, T*W)``, the whole spectrogram for audio), so the
network sees the window at once and does the same number of multiply-accumulates as the SNN over T
steps. Per stage: Conv3x3-BN-ReLU, 2x2 max pooling, then ``cells`` residual blocks (Conv-BN-ReLU x 2);
head: global average pool + Linear. Every layer gets real-valued input, so the energy estimator
(``energy.py``) counts all of it as MACs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .blocks import scaled_channels
from .misnet import MODALITIES, POOL_FACTOR, BackboneConfig
from .registry import register_family


@dataclass(frozen=True)
class CNNConfig(BackboneConfig):
    """The backbone fields (neuron fields unused) plus the one modality the CNN sees."""

    modality: str = 'audio'

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.modality not in MODALITIES:
            raise ValueError(f'modality must be one of {MODALITIES}, got {self.modality!r}')


def _conv_bn_relu(c_in: int, c_out: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class _Residual(nn.Module):
    def __init__(self, c: int, k: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn_relu(c, c, k), _conv_bn_relu(c, c, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UnimodalCNN(nn.Module):
    """``forward(audio, visual) -> (logits, audio_logits, visual_logits)``; the unused modality is ignored."""

    def __init__(self, cfg: CNNConfig) -> None:
        super().__init__()
        self.config = cfg
        self.modalities = (cfg.modality,)
        self.modality_heads: tuple[str, ...] = self.modalities
        c_in = cfg.audio_channels if cfg.modality == 'audio' else cfg.visual_channels
        layers: list[nn.Module] = []
        for c, n in zip(scaled_channels(cfg.channels, cfg.width), cfg.cells):
            layers += [_conv_bn_relu(c_in, c, cfg.kernel_size), nn.MaxPool2d(POOL_FACTOR)]
            layers += [_Residual(c, cfg.kernel_size) for _ in range(n)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, cfg.num_classes)

    def reset_state(self) -> None:
        """Stateless: nothing to reset (kept for the backends' common interface)."""

    def forward_train(self, audio: torch.Tensor, visual: torch.Tensor) -> dict[str, torch.Tensor]:
        x = audio if self.config.modality == 'audio' else visual
        channels = self.config.audio_channels if self.config.modality == 'audio' else self.config.visual_channels
        if not isinstance(x, torch.Tensor):
            raise TypeError(f'{self.config.modality} must be a torch.Tensor, got {type(x).__name__}')
        if x.dim() != 5 or tuple(x.shape[2:]) != (channels, *self.config.input_size):
            raise ValueError(f'{self.config.modality} must be (T, B, {channels}, '
                             f'{", ".join(map(str, self.config.input_size))}), got {tuple(x.shape)}')
        t, b, c, h, w = x.shape
        wide = x.permute(1, 2, 3, 0, 4).reshape(b, c, h, t * w)      # (B, C, H, T*W): slices side by side
        pooled = self.features(wide).mean(dim=(2, 3))                   # (B, C_last)
        logits = self.head(pooled)
        out = {'logits': logits, 'pooled': pooled}
        for m in MODALITIES:
            out[f'{m}_logits'] = logits if m == self.config.modality else logits.detach() * 0.0
        return out

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.forward_train(audio, visual)
        return out['logits'], out['audio_logits'], out['visual_logits']


@register_family('cnn')
def build_cnn(cfg: CNNConfig) -> UnimodalCNN:
    """Non-spiking single-modality CNN on the backbone's stages."""
    return UnimodalCNN(cfg)
