"""Inference-only multi-step LIF / MLIF with fewer kernels: same maths, about a third of the ops.

The reference neurons (:mod:`av_snn_ros.models.neurons`) follow spikingjelly's charge / fire / reset
template literally, which costs ~8 elementwise kernels per LIF step (sub, div, add, sub, ge, to, mul,
sub) plus a ``torch.stack`` of the spikes, and the MLIF additionally concatenates and splits both
membranes every step. On a CPU these kernels are memory bound, so at 128x128 inputs the neurons took
more time than the convolutions (see docs/performance.md). The fused step here writes the same numbers
with three kernels per LIF step and no concatenation:

- charge ``U = U - U / tau + C`` as one ``torch.add(C, U, alpha=1 - 1/tau)``;
- fire ``S = (U >= V_th)`` straight into the preallocated spike tensor ``out[t]`` (no stack);
- soft reset ``U -= V_th * S`` as one in-place ``sub_(S, alpha=V_th)``; hard reset is a ``where``.

Exactness: the fused charge equals the reference bit for bit when ``1/tau`` is exact in binary
(tau a power of two, e.g. the default tau = 2: ``U - U/2`` is exact by Sterbenz' lemma and equals
``0.5 * U``). For any other tau the fused path is *not* used and the neuron falls back to the
reference step (still without the stack/concat), so outputs are always identical to the reference.
``U >= V_th`` equals the reference's ``U - V_th >= 0`` for all finite and infinite floats (a nonzero
difference never rounds to zero under IEEE gradual underflow). The hard reset writes ``V_reset`` where the
reference computes ``S V_reset + (1 - S) U`` (equal unless ``U`` is infinite or NaN). Tested against
the reference on random inputs in ``tests/test_bench.py``.

Only the no-autograd path is replaced: with gradients enabled (training) the reference
implementation runs, so surrogate gradients are untouched. :func:`use_fast_neurons` switches the
neurons of a built model in place (class swap: parameters, buffers and ``state_dict`` keys unchanged)
and :func:`use_reference_neurons` switches them back.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .neurons import LIFNode, MLIFNode


def _exact_reciprocal(tau: float) -> bool:
    """True when ``1/tau`` is exactly representable, so ``U - U/tau == (1 - 1/tau) * U`` bitwise."""
    mantissa, _ = math.frexp(float(tau))
    return mantissa == 0.5          # tau = 2**k


def _inference(x: torch.Tensor) -> bool:
    return not (torch.is_grad_enabled() and x.requires_grad)


class FastLIFNode(LIFNode):
    """:class:`LIFNode` whose multi-step inference pass uses the fused three-kernel step."""

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if not _inference(x_seq):
            return super().multi_step_forward(x_seq)
        v = self.materialize_states((x_seq,), tuple(self._memories.values()), 'm')[0]
        out = torch.empty_like(x_seq)
        # The fused charge is exact only for power-of-two tau and a zero rest potential.
        fused = _exact_reciprocal(self.tau) and not self.v_reset
        for t in range(x_seq.shape[0]):
            x = x_seq[t]
            if not fused:
                v = self.neuronal_charge(x, v)
            elif self.decay_input:
                v = torch.add(v, torch.sub(x, v), alpha=1.0 / self.tau)      # U + (C - U) / tau
            else:
                v = torch.add(x, v, alpha=1.0 - 1.0 / self.tau)               # U - U / tau + C
            if self.v_reset is None:
                spike = torch.ge(v, self.v_threshold, out=out[t])
                v = v.sub_(spike, alpha=self.v_threshold)                      # soft reset
            else:
                mask = torch.ge(v, self.v_threshold)
                out[t].copy_(mask)
                v = v.masked_fill_(mask, self.v_reset)                         # hard reset
        self._memories['v'] = v
        return out


class FastMLIFNode(MLIFNode):
    """:class:`MLIFNode` whose multi-step inference pass fires each modality without cat/chunk.

    The joint fire ``Heaviside([a_v U_v ; a_a U_a] - V_th)`` followed by a channel split is the same
    elementwise comparison done on each half, so it is computed per modality into preallocated outputs.
    """

    def multi_step_forward(self, c_a_seq: torch.Tensor, c_v_seq: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        if not (_inference(c_a_seq) and _inference(c_v_seq)) or (
                torch.is_grad_enabled() and (self.alpha_a.requires_grad or self.alpha_v.requires_grad)):
            return super().multi_step_forward(c_a_seq, c_v_seq)
        v_a, v_v = self.materialize_states((c_a_seq, c_v_seq), tuple(self._memories.values()), 'm')
        out_a, out_v = torch.empty_like(c_a_seq), torch.empty_like(c_v_seq)
        fused = _exact_reciprocal(self.tau)
        decay = 1.0 - 1.0 / self.tau
        th = self.v_threshold
        for t in range(c_a_seq.shape[0]):
            if fused:
                v_a = torch.add(c_a_seq[t], v_a, alpha=decay)
                v_v = torch.add(c_v_seq[t], v_v, alpha=decay)
            else:
                v_a = self.neuronal_charge(c_a_seq[t], v_a)
                v_v = self.neuronal_charge(c_v_seq[t], v_v)
            torch.ge(v_a * self.alpha_a, th, out=out_a[t])
            torch.ge(v_v * self.alpha_v, th, out=out_v[t])
            v_a = v_a.sub_(out_a[t], alpha=th)
            v_v = v_v.sub_(out_v[t], alpha=th)
        self._memories['v_a'], self._memories['v_v'] = v_a, v_v
        return out_a, out_v


_FAST = {LIFNode: FastLIFNode, MLIFNode: FastMLIFNode}
_REFERENCE = {fast: ref for ref, fast in _FAST.items()}


def use_fast_neurons(model: nn.Module) -> int:
    """Switch every reference LIF/MLIF neuron of ``model`` to its fused class, in place.

    Returns how many neurons were switched. Parameters, buffers and state-dict keys do not change.
    """
    n = 0
    for mod in model.modules():
        fast = _FAST.get(type(mod))
        if fast is not None:
            mod.__class__ = fast
            n += 1
    return n


def use_reference_neurons(model: nn.Module) -> int:
    """Undo :func:`use_fast_neurons`; returns how many neurons were switched back."""
    n = 0
    for mod in model.modules():
        ref = _REFERENCE.get(type(mod))
        if ref is not None:
            mod.__class__ = ref
            n += 1
    return n


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every eval-mode ``BatchNorm{1,2}d`` that directly follows a conv in an ``nn.Sequential``.

    The conv gets the folded weight and bias and the batch norm becomes ``nn.Identity``, in place;
    returns the number of folds. Only for inference (the folded model cannot be trained). Results differ
    from the unfolded model by float rounding only, which can flip a spike whose membrane lies within
    rounding of the threshold: compare outputs (argmax, max abs diff), never expect bitwise equality.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    if model.training:
        raise ValueError('fold_batchnorm needs a model in eval mode (call model.eval() first)')
    pairs = ((nn.Conv1d, nn.BatchNorm1d), (nn.Conv2d, nn.BatchNorm2d))
    n = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = seq._modules[first], seq._modules[second]
            if any(type(conv) is c and type(bn) is b for c, b in pairs) and bn.track_running_stats:
                seq._modules[first] = fuse_conv_bn_eval(conv, bn)
                seq._modules[second] = nn.Identity()
                n += 1
    return n
