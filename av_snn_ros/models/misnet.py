"""MISNet: multimodal interactive spiking network (Guo et al., TOMM 2025), Sections 3.2-3.4.

Per stage ``l`` and modality ``m`` (Eq. 3, 4, 5, 12):

- unimodal spike generation ``S_m = LIF(BN(Conv3x3(X_m^{l-1})))``, then 2x2 max pooling of the spikes
  (the stage's features live at ``h_l = H / 2^l``, Eq. 12);
- ``N`` InteractCells: ``O_m = S_m + SEW(S_m)`` (SEW = (Conv-BN-LIF) x 2), ``C_m = O_m * W_m`` with a
  learnable ``W_m`` of size ``h_l x w_l`` broadcast over channels, then
  ``S_a, S_v = MLIF(C_a, C_v)``;

and the head ``P[t] = Linear(Pool(Concat(X_a^L, X_v^L)))`` (global average pool) averaged over T, plus
one linear head per modality for the unimodal losses (Eq. 13-15).

The same code builds the baselines (``baselines.py``): ``interaction='independent'`` replaces MLIF by
two ordinary LIF neurons (the paper's ablation Ab2, "plain concat fusion"), and a single modality
gives the unimodal encoders.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..contract import MODALITIES
from .blocks import ConvBNLIF, NeuronConfig, SeqMaxPool, SEWBlock, SpikingAVModel, scaled_channels
from .neurons import MLIFNode
from .registry import register_family

INTERACTIONS = ('mlif', 'independent')
POOL_FACTOR = 2          # each stage halves H and W


@dataclass(frozen=True)
class BackboneConfig:
    """Architecture shared by MISNet and its baselines. Defaults: MISNet-XS in the CREMA-D setting."""

    num_classes: int = 6
    channels: tuple[int, ...] = (64, 128, 256)     # c_l per stage, before the width multiplier
    cells: tuple[int, ...] = (2, 2, 1)             # InteractCells N per stage
    width: float = 1.0                             # channel multiplier (tiny variants use 0.25)
    input_size: tuple[int, int] = (128, 128)       # (H, W) of both audio and visual inputs
    audio_channels: int = 1
    visual_channels: int = 3
    timesteps: int = 4                             # the T the model is meant for (forward accepts any T)
    tau: float = 2.0                               # LIF membrane time constant (decay 1 - 1/tau)
    v_threshold: float = 1.0
    surrogate: str = 'sigmoid'
    surrogate_alpha: float = 4.0
    kernel_size: int = 3
    weight_init: float = 1.0                       # initial value of the InteractCell matrices W

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f'num_classes must be >= 1, got {self.num_classes}')
        if not self.channels or len(self.channels) != len(self.cells):
            raise ValueError(f'channels {self.channels} and cells {self.cells} need one entry per stage')
        if min(self.channels) < 1 or min(self.cells) < 0:
            raise ValueError('channels must be >= 1 and cells >= 0')
        scale = POOL_FACTOR ** len(self.channels)
        if len(self.input_size) != 2 or any(s < scale or s % scale for s in self.input_size):
            raise ValueError(f'input_size {self.input_size} must be two multiples of {scale} '
                             f'({len(self.channels)} stages halve it each)')
        if self.audio_channels < 1 or self.visual_channels < 1 or self.timesteps < 1:
            raise ValueError('audio_channels, visual_channels and timesteps must be >= 1')
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f'kernel_size must be odd, got {self.kernel_size}')
        scaled_channels(self.channels, self.width)   # validates width

    def neuron(self) -> NeuronConfig:
        # MISNet's LIF: U = (1 - 1/tau) U + C, soft reset (Eq. 2)
        return NeuronConfig(tau=self.tau, decay_input=False, v_threshold=self.v_threshold, v_reset=None,
                            surrogate=self.surrogate, surrogate_alpha=self.surrogate_alpha)


@dataclass(frozen=True)
class MISNetConfig(BackboneConfig):
    """MISNet: the backbone plus the MLIF parameters."""

    mlif_tau: float = 2.0          # the paper's "tau = 0.2" read as tau = 2 (decay 0.5); see docs/models.md
    alpha_init: float = 0.5        # initial alpha_a = alpha_v (Sec. 4.2)


class InteractCell(nn.Module):
    """SEW block per modality, ``C_m = O_m * W_m``, then MLIF (or independent LIFs for the baseline)."""

    def __init__(self, channels: int, size: tuple[int, int], modalities: tuple[str, ...], interaction: str,
                 cfg: BackboneConfig, mlif_tau: float, alpha_init: float) -> None:
        super().__init__()
        neuron = cfg.neuron()
        self.modalities = modalities
        self.sew = nn.ModuleDict({m: SEWBlock(channels, neuron) for m in modalities})
        self.weight = nn.ParameterDict({m: nn.Parameter(torch.full(size, float(cfg.weight_init)))
                                        for m in modalities})
        self.interaction = interaction
        if interaction == 'mlif':
            self.mlif = MLIFNode(tau=mlif_tau, v_threshold=cfg.v_threshold, alpha_init=alpha_init,
                                 surrogate=cfg.surrogate, surrogate_alpha=cfg.surrogate_alpha)
        else:
            self.lif = nn.ModuleDict({m: neuron.lif() for m in modalities})

    def forward(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        current = {m: self.sew[m](feats[m]) * self.weight[m] for m in self.modalities}  # (T, B, C, h, w)
        if self.interaction == 'mlif':
            s_a, s_v = self.mlif(current['audio'], current['visual'])
            return {'audio': s_a, 'visual': s_v}
        return {m: self.lif[m](current[m]) for m in self.modalities}


class Stage(nn.Module):
    """Unimodal spike generation per modality, 2x2 max pooling, then N InteractCells (Eq. 12)."""

    def __init__(self, in_channels: dict[str, int], channels: int, n_cells: int, size: tuple[int, int],
                 modalities: tuple[str, ...], interaction: str, cfg: BackboneConfig, mlif_tau: float,
                 alpha_init: float) -> None:
        super().__init__()
        neuron = cfg.neuron()
        self.spike_gen = nn.ModuleDict({m: ConvBNLIF(in_channels[m], channels, neuron, cfg.kernel_size)
                                        for m in modalities})
        self.pool = SeqMaxPool(POOL_FACTOR, POOL_FACTOR)
        self.cells = nn.ModuleList(InteractCell(channels, size, modalities, interaction, cfg, mlif_tau,
                                                alpha_init) for _ in range(n_cells))

    def forward(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feats = {m: self.pool(gen(feats[m])) for m, gen in self.spike_gen.items()}
        for cell in self.cells:
            feats = cell(feats)
        return feats


class MISNet(SpikingAVModel):
    """MISNet and its same-backbone baselines.

    ``forward(audio (T,B,Ca,H,W), visual (T,B,Cv,H,W)) -> (logits, audio_logits, visual_logits)``,
    each ``(B, K)`` averaged over T. Neuron state is reset at the start of every call. A unimodal
    model returns its one head as ``logits`` and as its modality's logits, zeros for the other.
    """

    def __init__(self, cfg: BackboneConfig, modalities: tuple[str, ...] = MODALITIES,
                 interaction: str = 'mlif', mlif_tau: float = 2.0, alpha_init: float = 0.5) -> None:
        super().__init__()
        if not modalities or any(m not in MODALITIES for m in modalities) or len(set(modalities)) != len(modalities):
            raise ValueError(f'modalities must be a non-empty subset of {MODALITIES}, got {modalities}')
        if interaction not in INTERACTIONS:
            raise ValueError(f'interaction must be one of {INTERACTIONS}, got {interaction!r}')
        if interaction == 'mlif' and tuple(modalities) != MODALITIES:
            raise ValueError('MLIF interaction needs both modalities')
        self.config = cfg
        self.modalities = tuple(m for m in MODALITIES if m in modalities)   # fixed order: audio, visual
        self.modality_heads: tuple[str, ...] = self.modalities
        channels = scaled_channels(cfg.channels, cfg.width)
        in_ch = {'audio': cfg.audio_channels, 'visual': cfg.visual_channels}
        size = tuple(cfg.input_size)
        stages = []
        for c, n in zip(channels, cfg.cells):
            size = (size[0] // POOL_FACTOR, size[1] // POOL_FACTOR)
            stages.append(Stage(in_ch, c, n, size, self.modalities, interaction, cfg, mlif_tau, alpha_init))
            in_ch = {m: c for m in MODALITIES}
        self.stages = nn.ModuleList(stages)
        feat = channels[-1]
        self.head = nn.Linear(feat * len(self.modalities), cfg.num_classes)
        # Unimodal heads O_a, O_v (Eq. 15); a unimodal model's fused head already is its modality head.
        self.modality_head = nn.ModuleDict(
            {m: nn.Linear(feat, cfg.num_classes) for m in self.modalities} if len(self.modalities) > 1 else {})
        self.collect_neurons()

    def forward_train(self, audio: torch.Tensor, visual: torch.Tensor) -> dict[str, torch.Tensor]:
        """Forward pass returning ``logits``, ``audio_logits``, ``visual_logits`` (and ``pooled``)."""
        inputs = {'audio': audio, 'visual': visual}
        for m in self.modalities:
            self._check(m, inputs[m], self.config.audio_channels if m == 'audio' else self.config.visual_channels)
        if len(self.modalities) == 2 and audio.shape[:2] != visual.shape[:2]:
            raise ValueError(f'audio and visual need the same (T, B), got {tuple(audio.shape[:2])} and '
                             f'{tuple(visual.shape[:2])}')
        self.reset_state()
        feats = {m: inputs[m] for m in self.modalities}
        for stage in self.stages:
            feats = stage(feats)
        pooled = {m: feats[m].mean(dim=(3, 4)) for m in self.modalities}            # (T, B, C)
        logits = self.head(torch.cat([pooled[m] for m in self.modalities], dim=2)).mean(0)   # (B, K)
        out = {'logits': logits}
        for m in MODALITIES:
            if m in self.modality_head:
                out[f'{m}_logits'] = self.modality_head[m](pooled[m]).mean(0)
            elif m in self.modalities:
                out[f'{m}_logits'] = logits
            else:
                # zeros computed from the logits rather than a constant: exported, a constant graph
                # output is rejected by some TensorRT parser versions (docs/jetson.md)
                out[f'{m}_logits'] = logits.detach() * 0.0
        out['pooled'] = torch.cat([pooled[m].mean(0) for m in self.modalities], dim=1)   # (B, sum C)
        return out


@register_family('misnet')
def build_misnet(cfg: MISNetConfig) -> MISNet:
    """MISNet with MLIF interaction (Table 1 variants differ only in channels / cells)."""
    return MISNet(cfg, MODALITIES, 'mlif', mlif_tau=cfg.mlif_tau, alpha_init=cfg.alpha_init)
