"""S-CMRL: spiking cross-modal transformer with semantic alignment (He, Zhao et al. 2025).

Written from the architecture notes (``/work/shared/notes/s-cmrl-architecture.md``), not from the
reference code. Per modality:

1. **SPS tokenizer**: 4 x (Conv3x3-BN-LIF-MaxPool(3, s2, p1)), channels E/8 -> E/4 -> E/2 -> E, then a
   relative position embedding Conv3x3-BN-LIF added residually; 128x128 -> 8x8 = 64 tokens ``(T,B,E,N)``.
2. **Block** (``depth`` times): spiking self-attention (SSA) residual; cross-modal complementary
   spatiotemporal spiking attention (CCSSA: queries from this modality, keys/values from the other);
   cross-modal residual ``x <- x + alpha * LIF(Linear(ccssa))`` with alpha = 1.5; MLP (hidden 4E,
   (Conv1x1-BN-LIF) x 2) residual. Both modalities' blocks read the other modality's tokens *from
   before* the block, so the two directions are symmetric.
3. **Head**: mean over tokens per modality, sum of modalities, mean over T, Linear.

Attention is spike-driven (no softmax): ``(Q K^T) V * scale``. Because there is no softmax the product
is associative, and because Q, K, V are binary spikes every partial sum is an exact small integer in
float32, so we evaluate ``Q (K^T V)`` (d x d per head, 4x fewer MACs at N = 64, d = 16) with
bit-identical results.

CCSSA "SpatialTemporal" (our reading, see docs/models.md): a spatial attention over tokens per
timestep, ``A_s = Q (K^T V) * scale``, and a temporal attention over timesteps per token and head,
``A_t`` (same formula with T as the sequence axis). The weighting is the product of the spatial mean
``mean_N(A_s)`` (one vector per timestep and head) and the temporal mean ``mean_T(A_t)`` (one vector per
token and head); it scales the cross-modal values ``V``, then LIF and the output projection
(Conv1x1-BN-LIF). The temporal result is mapped back with a proper permute ``(N,B,h,T,d) ->
(T,B,h,N,d)``; the reference reshapes ``[N,B,h,T,d]`` straight to ``[N,B,T,C]``, which mixes heads and
timesteps; we implement the documented intent instead.

Neurons: LIF ``u += (x - u) / tau``, tau = 2, threshold 1, hard reset to 0, sigmoid surrogate (alpha 4).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .blocks import NeuronConfig, SeqConvBN, SeqModule, SpikingAVModel
from .registry import register_family

SPS_STAGES = 4                       # conv-BN-LIF-maxpool stages of the tokenizer (128 -> 8)
SPS_FRACTIONS = (8, 4, 2, 1)         # channels E/8, E/4, E/2, E


@dataclass(frozen=True)
class SCMRLConfig:
    """S-CMRL hyper-parameters. Defaults: the CREMA-D configuration (E = 256, ~4.2 M parameters)."""

    num_classes: int = 6
    embed_dim: int = 256               # E
    num_heads: int = 16
    mlp_ratio: float = 4.0
    depth: int = 1                     # blocks per modality
    input_size: tuple[int, int] = (128, 128)
    audio_channels: int = 1
    visual_channels: int = 3
    timesteps: int = 4
    tau: float = 2.0
    v_threshold: float = 1.0
    surrogate: str = 'sigmoid'
    surrogate_alpha: float = 4.0
    attn_scale: float = 0.25
    residual_alpha: float = 1.5        # cross-modal residual weight alpha

    def __post_init__(self) -> None:
        if self.num_classes < 1 or self.depth < 1 or self.timesteps < 1:
            raise ValueError('num_classes, depth and timesteps must be >= 1')
        if self.embed_dim % SPS_FRACTIONS[0] or self.embed_dim % self.num_heads:
            raise ValueError(f'embed_dim {self.embed_dim} must be divisible by {SPS_FRACTIONS[0]} and by '
                             f'num_heads {self.num_heads}')
        scale = 2 ** SPS_STAGES
        if len(self.input_size) != 2 or any(s < scale or s % scale for s in self.input_size):
            raise ValueError(f'input_size {self.input_size} must be two multiples of {scale}')
        if self.mlp_ratio <= 0 or self.audio_channels < 1 or self.visual_channels < 1:
            raise ValueError('mlp_ratio, audio_channels and visual_channels must be positive')

    def neuron(self) -> NeuronConfig:
        return NeuronConfig(tau=self.tau, decay_input=True, v_threshold=self.v_threshold, v_reset=0.0,
                            surrogate=self.surrogate, surrogate_alpha=self.surrogate_alpha)


def conv1x1_bn(in_channels: int, out_channels: int, bias: bool = False) -> SeqConvBN:
    """Conv1d(k=1) (a per-token linear map) + BatchNorm1d over ``(T, B, C, N)``."""
    return SeqConvBN(in_channels, out_channels, kernel_size=1, dims=1, bias=bias)


class SPS(nn.Module):
    """Spiking patch splitting: image/spectrogram ``(T,B,C,H,W)`` -> tokens ``(T,B,E,N)``."""

    def __init__(self, in_channels: int, cfg: SCMRLConfig) -> None:
        super().__init__()
        neuron = cfg.neuron()
        layers = []
        for frac in SPS_FRACTIONS:
            out = cfg.embed_dim // frac
            layers += [SeqConvBN(in_channels, out), neuron.lif(),
                       SeqModule(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))]
            in_channels = out
        self.proj = nn.Sequential(*layers)
        self.rpe = nn.Sequential(SeqConvBN(cfg.embed_dim, cfg.embed_dim), neuron.lif())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)                                   # (T, B, E, h, w) spikes
        x = x + self.rpe(x)
        return x.flatten(3)                                # (T, B, E, N)


class SpikeQKV(nn.Module):
    """Conv1x1-BN-LIF producing spikes split into heads: ``(T,B,E,N) -> (T,B,h,N,d)``."""

    def __init__(self, cfg: SCMRLConfig) -> None:
        super().__init__()
        self.heads = cfg.num_heads
        self.proj = conv1x1_bn(cfg.embed_dim, cfg.embed_dim)
        self.lif = cfg.neuron().lif()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.lif(self.proj(x))                                             # (T, B, E, N)
        t, b, e, n = s.shape
        return s.reshape(t, b, self.heads, e // self.heads, n).transpose(3, 4)   # (T, B, h, N, d)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(T, B, h, N, d) -> (T, B, E, N)``."""
    t, b, h, n, d = x.shape
    return x.transpose(3, 4).reshape(t, b, h * d, n)


def spike_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Softmax-free attention ``(Q K^T) V * scale`` over axis -2, evaluated as ``Q (K^T V)``."""
    return (q @ (k.transpose(-2, -1) @ v)) * scale


class SSA(nn.Module):
    """Spiking self-attention (Spikformer): Q, K, V spikes, ``Q K^T V * scale``, LIF, projection."""

    def __init__(self, cfg: SCMRLConfig) -> None:
        super().__init__()
        self.q, self.k, self.v = SpikeQKV(cfg), SpikeQKV(cfg), SpikeQKV(cfg)
        self.scale = cfg.attn_scale
        self.attn_lif = cfg.neuron().lif()
        self.out = nn.Sequential(conv1x1_bn(cfg.embed_dim, cfg.embed_dim), cfg.neuron().lif())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = spike_attention(self.q(x), self.k(x), self.v(x), self.scale)     # (T, B, h, N, d)
        return self.out(self.attn_lif(merge_heads(a)))


class CCSSA(SSA):
    """Cross-modal complementary spatiotemporal spiking attention (queries: x, keys/values: y).

    Same layers as :class:`SSA`; only the forward differs.
    """

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(y), self.v(y)                               # (T, B, h, N, d)
        spatial = spike_attention(q, k, v, self.scale)                         # over tokens, per t
        # over timesteps, per token and head: (N, B, h, T, d), then back with a real permute
        qt, kt, vt = (z.permute(3, 1, 2, 0, 4) for z in (q, k, v))
        temporal = spike_attention(qt, kt, vt, self.scale).permute(3, 1, 2, 0, 4)  # (T, B, h, N, d)
        weight = spatial.mean(dim=3, keepdim=True) * temporal.mean(dim=0, keepdim=True)
        return self.out(self.attn_lif(merge_heads(weight * v)))


class MLP(nn.Module):
    """(Conv1x1-BN-LIF) x 2 with hidden size ``mlp_ratio * E``."""

    def __init__(self, cfg: SCMRLConfig) -> None:
        super().__init__()
        hidden = int(round(cfg.embed_dim * cfg.mlp_ratio))
        self.net = nn.Sequential(conv1x1_bn(cfg.embed_dim, hidden, bias=True), cfg.neuron().lif(),
                                 conv1x1_bn(hidden, cfg.embed_dim, bias=True), cfg.neuron().lif())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CrossModalBlock(nn.Module):
    """SSA residual, CCSSA with alpha-scaled cross-modal residual, MLP residual (one modality)."""

    def __init__(self, cfg: SCMRLConfig) -> None:
        super().__init__()
        self.self_attn = SSA(cfg)
        self.cross_attn = CCSSA(cfg)
        self.residual = nn.Sequential(SeqModule(nn.Conv1d(cfg.embed_dim, cfg.embed_dim, 1)),   # per-token Linear
                                      cfg.neuron().lif())
        self.alpha = cfg.residual_alpha
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(x)
        x = x + self.alpha * self.residual(self.cross_attn(x, other))
        return x + self.mlp(x)


class SCMRL(SpikingAVModel):
    """S-CMRL. ``forward(audio, visual) -> (logits, audio_logits, visual_logits)``, each ``(B, K)``.

    The classifier is linear in the summed modality features, so ``audio_logits`` / ``visual_logits``
    are that same classifier applied to one modality's pooled features (the decomposition of the fused
    prediction; S-CMRL trains no separate unimodal heads).
    """

    def __init__(self, cfg: SCMRLConfig) -> None:
        super().__init__()
        self.config = cfg
        self.modality_heads: tuple[str, ...] = ('audio', 'visual')
        self.audio_tokens = SPS(cfg.audio_channels, cfg)
        self.visual_tokens = SPS(cfg.visual_channels, cfg)
        self.audio_blocks = nn.ModuleList(CrossModalBlock(cfg) for _ in range(cfg.depth))
        self.visual_blocks = nn.ModuleList(CrossModalBlock(cfg) for _ in range(cfg.depth))
        self.head = nn.Linear(cfg.embed_dim, cfg.num_classes)
        self.collect_neurons()

    def forward_train(self, audio: torch.Tensor, visual: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits plus ``audio_feat`` / ``visual_feat`` ``(B, E)`` for the alignment loss."""
        self._check('audio', audio, self.config.audio_channels)
        self._check('visual', visual, self.config.visual_channels)
        if audio.shape[:2] != visual.shape[:2]:
            raise ValueError(f'audio and visual need the same (T, B), got {tuple(audio.shape[:2])} and '
                             f'{tuple(visual.shape[:2])}')
        self.reset_state()
        a, v = self.audio_tokens(audio), self.visual_tokens(visual)          # (T, B, E, N)
        for audio_block, visual_block in zip(self.audio_blocks, self.visual_blocks):
            a, v = audio_block(a, v), visual_block(v, a)
        audio_feat = a.mean(dim=3).mean(dim=0)                                # (B, E)
        visual_feat = v.mean(dim=3).mean(dim=0)
        return {'logits': self.head(audio_feat + visual_feat),
                'audio_logits': self.head(audio_feat),
                'visual_logits': self.head(visual_feat),
                'audio_feat': audio_feat, 'visual_feat': visual_feat}


@register_family('scmrl')
def build_scmrl(cfg: SCMRLConfig) -> SCMRL:
    """S-CMRL with CCSSA (SpatialTemporal) and the alpha-scaled cross-modal residual."""
    return SCMRL(cfg)
