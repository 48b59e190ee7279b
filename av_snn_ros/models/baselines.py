"""Baselines on MISNet's own backbone code: plain concat fusion and the unimodal encoders.

- ``concat``: two encoders with the same stages and SEW cells as MISNet, but the MLIF neuron of each
  InteractCell is replaced by two independent LIF neurons (the paper's ablation Ab2); the head
  concatenates the pooled features exactly like MISNet. The comparison isolates MLIF.
- ``unimodal``: one encoder (``modality: audio`` or ``visual``) with the same stages; its single head
  is reported as ``logits`` and as its modality's logits, the other modality's logits are zeros.
"""
from __future__ import annotations

from dataclasses import dataclass

from .misnet import MODALITIES, BackboneConfig, MISNet
from .registry import register_family


@dataclass(frozen=True)
class ConcatConfig(BackboneConfig):
    """Two-encoder concat baseline: MISNet's backbone fields, no MLIF."""


@dataclass(frozen=True)
class UnimodalConfig(BackboneConfig):
    """Single-modality encoder: MISNet's backbone fields plus the modality it sees."""

    modality: str = 'audio'

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.modality not in MODALITIES:
            raise ValueError(f'modality must be one of {MODALITIES}, got {self.modality!r}')


@register_family('concat')
def build_concat(cfg: ConcatConfig) -> MISNet:
    """Audio + visual encoders with independent LIF neurons, concat fusion head."""
    return MISNet(cfg, MODALITIES, 'independent')


@register_family('unimodal')
def build_unimodal(cfg: UnimodalConfig) -> MISNet:
    """One encoder for ``cfg.modality``; the other input is accepted and ignored."""
    return MISNet(cfg, (cfg.modality,), 'independent')
