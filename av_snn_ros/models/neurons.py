"""Spiking neurons on spikingjelly 2.0: a LIF node and the multimodal LIF (MLIF) of MISNet.

Both subclass :class:`spikingjelly.activation_based.neuron.BaseNode` and keep its charge / fire / reset
template and its explicit-state functional step (``single_step_functional_forward``), so
``spikingjelly.activation_based.functional.reset_net`` and the rest of spikingjelly's tooling work on
them. Layout is time first: single step ``x`` is ``(B, ...)``, multi step (``step_mode='m'``, the default
here) ``x_seq`` is ``(T, B, ...)``.

Why not spikingjelly's own ``LIFNode``: its multi-step path dispatches to backend kernels that only
export to ONNX through the dynamo exporter, and MLIF needs two inputs and two membranes anyway. The
maths below is spikingjelly's LIF (tests compare the two numerically); the forward pass uses only
elementwise torch ops, so the legacy and the dynamo ONNX exporters both unroll it over T.

Surrogate gradients: the Heaviside fire step uses a spikingjelly surrogate (``sigmoid`` by default, as
the MISNet paper) whenever autograd is recording; without autograd (inference, export) it is the plain
comparison ``v >= v_threshold``, which is exactly the surrogate's forward value.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, Optional

import torch
import torch.nn as nn
from spikingjelly.activation_based import surrogate as sj_surrogate
from spikingjelly.activation_based.neuron import BaseNode

from . import native_kernels

# name -> spikingjelly surrogate class; every entry takes ``alpha`` (its sharpness)
SURROGATES: dict[str, Callable[..., nn.Module]] = {
    'sigmoid': sj_surrogate.Sigmoid,
    'atan': sj_surrogate.ATan,
}


def get_surrogate(name: str | nn.Module, alpha: float = 4.0) -> nn.Module:
    """A fresh surrogate module from its name (``sigmoid``, ``atan``) or the module itself."""
    if isinstance(name, nn.Module):
        return name
    if not isinstance(name, str) or name.lower() not in SURROGATES:
        raise ValueError(f'unknown surrogate {name!r}; choose one of {", ".join(SURROGATES)}')
    return SURROGATES[name.lower()](alpha=float(alpha))


def decay_from_tau(tau: float) -> float:
    """Membrane decay factor ``1 - 1/tau`` of Eq. 2; ``tau`` must be > 1 so the factor lies in (0, 1).

    The MISNet paper writes tau = 0.2, which would make the factor -4 (an oscillating, exploding
    membrane); we reject such values instead of silently reinterpreting them (see docs/models.md).
    """
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 1.0:
        raise ValueError(f'tau must be a number > 1 (decay 1 - 1/tau in (0, 1)), got {tau!r}; the paper\'s '
                         '"tau = 0.2" is read as tau = 2.0, see docs/models.md')
    return 1.0 - 1.0 / float(tau)


def _fire(v_minus_threshold: torch.Tensor, surrogate: nn.Module) -> torch.Tensor:
    """Heaviside spike with a surrogate gradient when autograd is recording."""
    if torch.is_grad_enabled() and v_minus_threshold.requires_grad:
        return surrogate(v_minus_threshold)
    return (v_minus_threshold >= 0).to(v_minus_threshold.dtype)


class LIFNode(BaseNode):
    """Leaky integrate-and-fire neuron (charge, fire, reset; spikingjelly template).

    Charge (``decay_input=False``, MISNet Eq. 2):  ``U[t] = (1 - 1/tau) U[t-1] + C[t]``
    Charge (``decay_input=True``, S-CMRL):         ``U[t] = U[t-1] + (C[t] - (U[t-1] - V_reset)) / tau``
    Fire:   ``S[t] = Heaviside(U[t] - V_th)``
    Reset:  soft (``v_reset=None``, Eq. 2) ``U <- U - V_th S``; hard ``U <- S V_reset + (1 - S) U``.

    Both charges are ``U[t] = decay U[t-1] + D[t]`` with ``decay = 1 - 1/tau`` and the drive
    ``D = C`` (or ``D = (C + V_reset) / tau`` with decay_input), so the drive of all T steps is computed
    in one vectorised op and each step costs one fused multiply-add, a compare and a reset.

    Shapes: single step ``(B, ...)``; multi step ``(T, B, ...)``.
    """

    def __init__(self, tau: float = 2.0, decay_input: bool = False, v_threshold: float = 1.0,
                 v_reset: Optional[float] = None, surrogate: str | nn.Module = 'sigmoid',
                 surrogate_alpha: float = 4.0, detach_reset: bool = False, step_mode: str = 'm') -> None:
        decay = decay_from_tau(tau)
        if v_reset is not None:
            v_reset = float(v_reset)
        super().__init__(v_threshold=float(v_threshold), v_reset=v_reset,
                         surrogate_function=get_surrogate(surrogate, surrogate_alpha),
                         detach_reset=bool(detach_reset), step_mode=step_mode)
        self.tau = float(tau)
        self.decay = decay
        self.decay_input = bool(decay_input)
        rest = 0.0 if v_reset is None else v_reset
        # U - (U - rest)/tau + s*C  ==  decay*U + (s*C + rest/tau), s = 1/tau with decay_input else 1
        self._input_scale = 1.0 / self.tau if self.decay_input else 1.0
        self._drive_offset = rest / self.tau
        exact = self.decay_input and rest == 0.0 and math.frexp(self.tau)[0] == 0.5   # tau = 2^k
        self._membrane_scale = self.tau if exact else 1.0

    def extra_repr(self) -> str:
        return super().extra_repr() + f', tau={self.tau}, decay_input={self.decay_input}'

    def drive(self, x: torch.Tensor) -> torch.Tensor:
        """Input term ``D`` of the charge equation (vectorised over any leading axes)."""
        if self._input_scale != 1.0:
            x = x * self._input_scale
        if self._drive_offset != 0.0:
            x = x + self._drive_offset
        return x

    # -- the three steps, shared by the single- and multi-step paths
    def neuronal_charge(self, d: torch.Tensor, v: torch.Tensor | float) -> torch.Tensor:
        """``U[t] = decay U[t-1] + D[t]``; ``v`` may be the float reset value (state not materialised)."""
        if isinstance(v, float):
            return d if v == 0.0 else d + self.decay * v
        return torch.add(d, v, alpha=self.decay)

    def neuronal_fire(self, v: torch.Tensor) -> torch.Tensor:
        return _fire(v - self.v_threshold, self.surrogate_function)

    def neuronal_reset(self, v: torch.Tensor, spike: torch.Tensor) -> torch.Tensor:
        s = spike.detach() if self.detach_reset else spike
        if self.v_reset is None:
            return torch.sub(v, s, alpha=self.v_threshold)
        if self.v_reset == 0.0:
            return v * (1.0 - s)
        return s * self.v_reset + (1.0 - s) * v

    def _step(self, d: torch.Tensor, v: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        v = self.neuronal_charge(d, v)
        if torch.is_grad_enabled() and v.requires_grad:
            spike = self.neuronal_fire(v)
            return spike, self.neuronal_reset(v, spike)
        # inference: same values, fewer ops (the compare's mask drives the reset directly)
        mask = v >= self.v_threshold
        spike = mask.to(v.dtype)
        if self.v_reset is None:
            return spike, torch.sub(v, spike, alpha=self.v_threshold)
        if self.v_reset == 0.0:
            # the same values as masked_fill (v >= V_th > 0 where it fires); exported as Sub + Mul,
            # which onnxruntime runs faster than Where: S-CMRL 49.5 -> 45.7 ms (docs/performance.md)
            return spike, v * (1.0 - spike)
        return spike, v.masked_fill(mask, self.v_reset)

    def _initial_state(self, x: torch.Tensor) -> torch.Tensor | float:
        v = self._memories['v']
        if isinstance(v, torch.Tensor) and v.shape == x.shape:
            return v
        return 0.0 if self.v_reset is None else self.v_reset

    def single_step_functional_forward(self, inputs: tuple[torch.Tensor, ...], states: tuple[object, ...]
                                       ) -> tuple[tuple[torch.Tensor, ...], tuple[object, ...]]:
        spike, v = self._step(self.drive(inputs[0]), states[0])
        return (spike,), (v, *states[1:])

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        # The one Python loop of a spiking layer: T steps of a few elementwise ops.
        v = self._initial_state(x_seq[0])
        if _needs_reference_path(x_seq):
            spikes = []
            for d in self.drive(x_seq):
                spike, v = self._step(d, v)
                spikes.append(spike)
            self._memories['v'] = v
            return torch.stack(spikes)
        return self._fast_multi_step(x_seq, v)

    def _fast_multi_step(self, x_seq: torch.Tensor, v: torch.Tensor | float) -> torch.Tensor:
        """Inference-only loop with the same values: spikes written in place, in-place resets.

        With ``decay_input`` and tau a power of two the membrane is tracked as ``tau * U``: scaling by
        a power of two is exact in floating point, so ``tau*U >= tau*V_th`` fires exactly when
        ``U >= V_th`` does, and the per-element input scaling pass disappears.
        """
        scale = self._membrane_scale
        drive = x_seq if scale != 1.0 else self.drive(x_seq)
        threshold = self.v_threshold * scale
        reset = None if self.v_reset is None else self.v_reset * scale
        if native_kernels.active() and isinstance(v, float) and v == 0.0:
            native = native_kernels.lif_multistep(drive, self.decay, threshold, reset)
            if native is not None:
                out, mem = native
                self._memories['v'] = mem / scale if scale != 1.0 else mem
                return out
        out = torch.empty_like(x_seq)
        mem = None                                      # one membrane buffer, updated in place
        for d, o in zip(drive.unbind(0), out.unbind(0)):
            if mem is not None:
                torch.add(d, mem, alpha=self.decay, out=mem)
            elif isinstance(v, float):                  # first charge from the reset value
                mem = d.clone() if v == 0.0 else d + self.decay * (v * scale)
            else:                                       # carried state (single-window use resets it)
                mem = torch.add(d, v * scale, alpha=self.decay)
            torch.ge(mem, threshold, out=o)             # spikes as 0./1. straight into the output
            if reset is None:
                mem.sub_(o, alpha=threshold)
            elif reset == 0.0:                          # U - U*S: exactly 0 where S = 1
                mem.addcmul_(mem, o, value=-1.0)
            else:
                mem.masked_fill_(o.bool(), reset)
        v = mem
        self._memories['v'] = v / scale if scale != 1.0 else v
        return out


_reference_only = False


@contextlib.contextmanager
def reference_paths() -> Iterator[None]:
    """Run models with their training-time computations only (process-wide, for benchmarks and tests).

    Inference normally takes fast paths with the same values: fused multi-step neurons (this module),
    batch norm folded into the convolution and channels-last activations (``blocks.SeqConvBN``).
    Inside this context every model computes as it does in training, step by step through
    spikingjelly's charge/fire/reset template, batch norm after the convolution, NCHW: the plain eager
    torch baseline that ``av-snn bench`` times the fast paths against.
    """
    global _reference_only
    previous, _reference_only = _reference_only, True
    try:
        yield
    finally:
        _reference_only = previous


def fast_paths_allowed() -> bool:
    """False inside :func:`reference_paths` or while the ONNX tracer records the graph."""
    return not (_reference_only or torch.jit.is_tracing())


def _needs_reference_path(x: torch.Tensor) -> bool:
    """True when autograd records (surrogate gradients), the ONNX tracer records, or reference_paths() is on."""
    return (torch.is_grad_enabled() and x.requires_grad) or not fast_paths_allowed()


class MLIFNode(BaseNode):
    """Multimodal LIF neuron of MISNet (Eq. 6-11): one neuron, two membranes, one joint fire.

    Multimodal charge:  ``U_m[t] = (1 - 1/tau) U_m[t-1] + C_m[t]``,  m in {v, a}
    Multimodal fusion:  ``U[t] = [alpha_v U_v[t] ; alpha_a U_a[t]]`` (channel concat, alpha learnable)
    Multimodal fire:    ``S[t] = Heaviside(U[t] - V_th)``; ``[S_v ; S_a] = split(S[t])``
    Multimodal reset:   ``U_m <- U_m - V_th S_m`` (soft reset on the un-scaled membranes)

    ``forward(c_audio, c_visual) -> (s_audio, s_visual)``; both inputs ``(T, B, C, H, W)`` in
    multi-step mode or ``(B, C, H, W)`` in single-step mode, with equal shapes (the channel axis is the
    concatenation axis).
    """

    def __init__(self, tau: float = 2.0, v_threshold: float = 1.0, alpha_init: float = 0.5,
                 surrogate: str | nn.Module = 'sigmoid', surrogate_alpha: float = 4.0,
                 detach_reset: bool = False, step_mode: str = 'm') -> None:
        decay = decay_from_tau(tau)
        super().__init__(v_threshold=float(v_threshold), v_reset=None,
                         surrogate_function=get_surrogate(surrogate, surrogate_alpha),
                         detach_reset=bool(detach_reset), step_mode=step_mode)
        self.tau = float(tau)
        self.decay = decay
        self.alpha_a = nn.Parameter(torch.tensor(float(alpha_init)))
        self.alpha_v = nn.Parameter(torch.tensor(float(alpha_init)))
        # BaseNode registered ``v``; MLIF keeps one membrane per modality instead.
        del self._memories['v'], self._memories_rv['v']
        self.register_memory('v_a', 0.0)
        self.register_memory('v_v', 0.0)

    def extra_repr(self) -> str:
        return f'v_threshold={self.v_threshold}, tau={self.tau}, step_mode={self.step_mode}'

    def _v_seq_source(self):  # spikingjelly's optional voltage recording reads this
        return self.v_v

    def materialize_states(self, inputs, states, step_mode):
        c_a, c_v = inputs
        if c_a.shape != c_v.shape:
            raise ValueError(f'MLIF needs equal audio and visual shapes, got {tuple(c_a.shape)} and '
                             f'{tuple(c_v.shape)}')
        x = c_a[0] if step_mode == 'm' else c_a
        # a float state is the reset value 0 (not materialised: the first charge is then just C[t])
        return tuple(v if isinstance(v, torch.Tensor) and v.shape == x.shape else 0.0 for v in states)

    def neuronal_charge(self, c: torch.Tensor, v: torch.Tensor | float) -> torch.Tensor:
        """``U_m[t] = (1 - 1/tau) U_m[t-1] + C_m[t]`` (Eq. 6)."""
        if isinstance(v, float):
            return c if v == 0.0 else c + self.decay * v
        return torch.add(c, v, alpha=self.decay)

    def neuronal_fire(self, v_a: torch.Tensor, v_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fused = torch.cat((self.alpha_v * v_v, self.alpha_a * v_a), dim=1)     # (B, 2C, ...), Eq. 7
        spike = _fire(fused - self.v_threshold, self.surrogate_function)        # Eq. 8
        s_v, s_a = torch.chunk(spike, 2, dim=1)                                # Eq. 9
        return s_a, s_v

    def neuronal_reset(self, v: torch.Tensor, spike: torch.Tensor) -> torch.Tensor:
        s = spike.detach() if self.detach_reset else spike
        return torch.sub(v, s, alpha=self.v_threshold)                          # Eq. 10

    def _step(self, c_a: torch.Tensor, c_v: torch.Tensor, v_a: torch.Tensor, v_v: torch.Tensor):
        v_a = self.neuronal_charge(c_a, v_a)
        v_v = self.neuronal_charge(c_v, v_v)
        s_a, s_v = self.neuronal_fire(v_a, v_v)
        return s_a, s_v, self.neuronal_reset(v_a, s_a), self.neuronal_reset(v_v, s_v)

    def single_step_functional_forward(self, inputs, states):
        s_a, s_v, v_a, v_v = self._step(inputs[0], inputs[1], states[0], states[1])
        return (s_a, s_v), (v_a, v_v)

    def multi_step_forward(self, c_a_seq: torch.Tensor, c_v_seq: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        v_a, v_v = self.materialize_states((c_a_seq, c_v_seq), tuple(self._memories.values()), 'm')
        recording = torch.is_grad_enabled() and (
            c_a_seq.requires_grad or c_v_seq.requires_grad or self.alpha_a.requires_grad
            or self.alpha_v.requires_grad)
        if recording or not fast_paths_allowed():
            out_a, out_v = [], []
            for c_a, c_v in zip(c_a_seq, c_v_seq):
                s_a, s_v, v_a, v_v = self._step(c_a, c_v, v_a, v_v)
                out_a.append(s_a)
                out_v.append(s_v)
            self._memories['v_a'], self._memories['v_v'] = v_a, v_v
            return torch.stack(out_a), torch.stack(out_v)
        return self._fast_multi_step(c_a_seq, c_v_seq, v_a, v_v)

    def _fast_multi_step(self, c_a_seq, c_v_seq, v_a, v_v):
        """Inference-only loop with the same values. Firing on the concatenation
        ``[alpha_v U_v; alpha_a U_a]`` and splitting is elementwise, so each half is fired on its own
        (no concat/split copies); resets are in place on membranes this loop owns."""
        alpha_a, alpha_v = self.alpha_a.detach(), self.alpha_v.detach()
        vth = self.v_threshold
        if native_kernels.active() and isinstance(v_a, float) and isinstance(v_v, float) and v_a == v_v == 0.0:
            native = native_kernels.mlif_multistep(c_a_seq, c_v_seq, self.decay, float(alpha_a), float(alpha_v), vth)
            if native is not None:
                s_a, s_v, self._memories['v_a'], self._memories['v_v'] = native
                return s_a, s_v
        out_a, out_v = torch.empty_like(c_a_seq), torch.empty_like(c_v_seq)
        for c_a, c_v, o_a, o_v in zip(c_a_seq.unbind(0), c_v_seq.unbind(0), out_a.unbind(0), out_v.unbind(0)):
            v_a = self.neuronal_charge(c_a, v_a)
            v_v = self.neuronal_charge(c_v, v_v)
            torch.ge(alpha_a * v_a, vth, out=o_a)
            torch.ge(alpha_v * v_v, vth, out=o_v)
            v_a = v_a.sub_(o_a, alpha=vth) if v_a is not c_a else torch.sub(v_a, o_a, alpha=vth)
            v_v = v_v.sub_(o_v, alpha=vth) if v_v is not c_v else torch.sub(v_v, o_v, alpha=vth)
        self._memories['v_a'], self._memories['v_v'] = v_a, v_v
        return out_a, out_v
