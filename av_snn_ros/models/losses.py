"""Training losses by name: ``build_loss(name, **kwargs) -> loss_fn(out, targets) -> (loss, parts)``.

``out`` is a model's ``forward_train`` dict (``logits``, ``audio_logits``, ``visual_logits`` and, for
S-CMRL, ``audio_feat`` / ``visual_feat``); ``targets`` are class indices ``(B,)``. ``parts`` holds the
detached float value of every term (and ``loss``) for logging.

- ``misnet_mse``: MISNet Eq. 14-16, ``MSE(p, Y) + beta_a MSE(o_a, Y) + beta_v MSE(o_v, Y)`` with one-hot Y.
- ``ce``: cross-entropy with label smoothing on the fused logits (optional unimodal terms).
- ``scmrl``: S-CMRL, cross-entropy (label smoothing 0.1) + ``weight`` x supervised contrastive
  alignment between the pooled audio and visual features (temperature 0.07).

Unimodal terms are only added for heads the model really has: pass ``modality_heads`` (the model's
attribute of that name) so a unimodal baseline is not penalised for its all-zero missing head.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[dict, torch.Tensor], tuple[torch.Tensor, dict]]
ALL_HEADS = ('audio', 'visual')


def _check_targets(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(f'targets must be (B,) class indices for logits {tuple(logits.shape)}, '
                         f'got {tuple(targets.shape)}')


def _check_heads(modality_heads) -> tuple[str, ...]:
    heads = tuple(modality_heads)
    if any(h not in ALL_HEADS for h in heads):
        raise ValueError(f'modality_heads must be a subset of {ALL_HEADS}, got {heads}')
    return heads


def misnet_mse(beta_a: float = 0.5, beta_v: float = 0.5,
               modality_heads: tuple[str, ...] = ALL_HEADS) -> LossFn:
    """MISNet's loss (Eq. 14-16): MSE of the T-averaged outputs against one-hot labels."""
    heads = _check_heads(modality_heads)
    betas = {'audio': float(beta_a), 'visual': float(beta_v)}

    def loss_fn(out: dict, targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
        logits = out['logits']
        _check_targets(logits, targets)
        onehot = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
        loss = F.mse_loss(logits, onehot)
        parts = {'mm': float(loss.detach())}
        if len(heads) > 1:   # a unimodal model's modality head is its fused head: no second term
            for m in heads:
                term = F.mse_loss(out[f'{m}_logits'], onehot)
                parts[m] = float(term.detach())
                loss = loss + betas[m] * term
        parts['loss'] = float(loss.detach())
        return loss, parts
    return loss_fn


def cross_entropy(label_smoothing: float = 0.1, beta_a: float = 0.0, beta_v: float = 0.0,
                  modality_heads: tuple[str, ...] = ALL_HEADS) -> LossFn:
    """Cross-entropy with label smoothing on the fused logits, optionally on the modality heads."""
    heads = _check_heads(modality_heads)
    betas = {'audio': float(beta_a), 'visual': float(beta_v)}

    def loss_fn(out: dict, targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
        logits = out['logits']
        _check_targets(logits, targets)
        loss = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
        parts = {'ce': float(loss.detach())}
        if len(heads) > 1:
            for m in heads:
                if betas[m]:
                    term = F.cross_entropy(out[f'{m}_logits'], targets, label_smoothing=label_smoothing)
                    parts[m] = float(term.detach())
                    loss = loss + betas[m] * term
        parts['loss'] = float(loss.detach())
        return loss, parts
    return loss_fn


def supervised_alignment(audio_feat: torch.Tensor, visual_feat: torch.Tensor, targets: torch.Tensor,
                         temperature: float = 0.07) -> torch.Tensor:
    """Cross-modal supervised contrastive loss (S-CMRL's semantic alignment).

    Audio feature ``i`` and visual feature ``j`` form a positive pair when their labels match; each
    anchor's loss is the mean negative log-probability of its positives under a softmax over all
    cosine similarities / temperature of the other modality. Symmetric: averaged over audio->visual and
    visual->audio anchors. ``audio_feat``, ``visual_feat``: ``(B, C)``.
    """
    if audio_feat.shape != visual_feat.shape or audio_feat.dim() != 2:
        raise ValueError(f'features must both be (B, C), got {tuple(audio_feat.shape)} and '
                         f'{tuple(visual_feat.shape)}')
    a = F.normalize(audio_feat, dim=1)
    v = F.normalize(visual_feat, dim=1)
    sim = a @ v.t() / temperature                                        # (B, B)
    positives = (targets[:, None] == targets[None, :]).to(sim.dtype)     # diagonal always positive

    def one_way(s: torch.Tensor) -> torch.Tensor:
        log_prob = s - torch.logsumexp(s, dim=1, keepdim=True)
        return -((log_prob * positives).sum(1) / positives.sum(1)).mean()
    return 0.5 * (one_way(sim) + one_way(sim.t()))


def scmrl(label_smoothing: float = 0.1, weight: float = 1.0, temperature: float = 0.07) -> LossFn:
    """S-CMRL's objective: CE with label smoothing + ``weight`` x supervised cross-modal alignment."""
    def loss_fn(out: dict, targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
        logits = out['logits']
        _check_targets(logits, targets)
        if 'audio_feat' not in out or 'visual_feat' not in out:
            raise ValueError('the scmrl loss needs audio_feat and visual_feat in the model output '
                             '(an S-CMRL model\'s forward_train)')
        ce = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
        align = supervised_alignment(out['audio_feat'], out['visual_feat'], targets, temperature)
        loss = ce + weight * align
        return loss, {'ce': float(ce.detach()), 'align': float(align.detach()), 'loss': float(loss.detach())}
    return loss_fn


LOSSES: dict[str, Callable[..., LossFn]] = {'misnet_mse': misnet_mse, 'ce': cross_entropy, 'scmrl': scmrl}


def build_loss(name: str, **kwargs) -> LossFn:
    """Loss function ``name`` (``misnet_mse``, ``ce``, ``scmrl``) configured with ``kwargs``."""
    if name not in LOSSES:
        raise ValueError(f'unknown loss {name!r}; choose one of {", ".join(LOSSES)}')
    try:
        return LOSSES[name](**kwargs)
    except TypeError as exc:
        raise ValueError(f'loss {name!r}: {exc}') from exc
