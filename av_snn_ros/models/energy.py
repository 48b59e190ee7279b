"""Theoretical energy of one window on neuromorphic hardware, the estimator the MISNet paper uses.

Following the SNN literature the paper cites (Spikformer-style estimates, 45 nm CMOS numbers):

- a layer whose input is **real-valued** (the first layer of each modality, heads on averaged features,
  attention products) performs multiply-accumulates: ``E = MACs x 4.6 pJ``;
- a layer whose input is **spikes** (non-negative integers, usually 0/1) performs one accumulate per
  input spike and synapse: ``E = MACs x r x 0.9 pJ``, ``r`` the measured input firing rate (mean
  spike count per input element).

"FLOPs" in that literature (and in ``LayerEnergy.flops``) means multiply-accumulates, counted with
``torch.utils.flop_counter`` (which reports 2 FLOPs per MAC; we halve it). Everything is per sample
(per window of T timesteps: the FLOP count covers all T steps, rates are averaged over them).
Elementwise work (neuron updates, pooling, BN folded into convs) is not counted, as in the paper.

:class:`EnergyMeter` counts FLOPs once per input shape and afterwards only reads input firing rates
from forward pre-hooks, so a runtime can report energy for every window the torch backend runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from .blocks import SeqConvBN
from .neurons import reference_paths

E_MAC_PJ = 4.6       # energy of a 32-bit float multiply-accumulate (45 nm), pJ
E_AC_PJ = 0.9        # energy of a 32-bit float accumulate (45 nm), pJ
FLOPS_PER_MAC = 2    # torch's flop counter counts a MAC as two FLOPs
PJ_PER_MJ = 1e9

_WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)


class LayerEnergy(NamedTuple):
    """One layer's share of a window: ``kind`` is ``'sop'`` (spike input) or ``'mac'`` (real input)."""

    name: str
    kind: str
    flops: float        # multiply-accumulates per sample per window
    rate: float         # input firing rate (1.0 for 'mac' layers)
    mj: float


@dataclass
class EnergyReport:
    """Energy per sample (one window) in millijoules, with the per-layer breakdown."""

    total_mj: float
    per_layer: list[LayerEnergy] = field(default_factory=list)

    @property
    def mac_mj(self) -> float:
        return sum(layer.mj for layer in self.per_layer if layer.kind == 'mac')

    @property
    def sop_mj(self) -> float:
        return sum(layer.mj for layer in self.per_layer if layer.kind == 'sop')

    def summary(self) -> dict[str, float]:
        """Flat numbers for diagnostics: energy (J and mJ), its MAC/SOP parts, synaptic operations,
        dense MACs and the MAC-weighted input firing rate of the spiking layers."""
        sop = [layer for layer in self.per_layer if layer.kind == 'sop']
        sop_macs = sum(layer.flops for layer in sop)
        synops = sum(layer.flops * layer.rate for layer in sop)
        return {'energy_j': self.total_mj * 1e-3, 'energy_mj': self.total_mj, 'mac_mj': self.mac_mj,
                'sop_mj': self.sop_mj, 'synops': synops,
                'macs': sum(layer.flops for layer in self.per_layer),
                'firing_rate': synops / sop_macs if sop_macs else 0.0}

    # a read-only mapping view of summary(), so ``dict(report)`` gives the flat numbers
    def keys(self):
        return self.summary().keys()

    def __getitem__(self, key: str) -> float:
        return self.summary()[key]

    def table(self) -> str:
        """A plain-text table of the breakdown (for logs and docs)."""
        rows = [f'{"layer":48s} {"kind":4s} {"MMAC":>9s} {"rate":>6s} {"uJ":>9s}']
        for layer in self.per_layer:
            rows.append(f'{layer.name:48s} {layer.kind:4s} {layer.flops / 1e6:9.2f} {layer.rate:6.3f} '
                        f'{layer.mj * 1e3:9.2f}')
        rows.append(f'total {self.total_mj:.4f} mJ (MAC {self.mac_mj:.4f}, SOP {self.sop_mj:.4f})')
        return '\n'.join(rows)


def energy_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules whose weights do the work: conv+BN wrappers and conv/linear layers outside them."""
    layers, inside = [], set()
    for name, module in model.named_modules():
        if isinstance(module, SeqConvBN):
            layers.append((name, module))
            inside.update(id(m) for m in module.modules())
        elif isinstance(module, _WEIGHT_LAYERS) and id(module) not in inside:
            layers.append((name, module))
    return layers


class _RateProbe:
    """Forward pre-hook state of one layer: spike count and element count of its last input."""

    __slots__ = ('total', 'numel', 'spiking', 'calls')

    def __init__(self) -> None:
        self.total, self.numel, self.spiking, self.calls = 0.0, 0, True, 0


class EnergyMeter:
    """Reusable energy estimator for ``model``: run the model, then call :meth:`report`.

    ``with EnergyMeter(model) as meter: model(audio, visual); meter.report()`` — or
    :meth:`measure` to do both. FLOPs are counted once per input shape (one extra forward).
    """

    def __init__(self, model: nn.Module, e_mac_pj: float = E_MAC_PJ, e_ac_pj: float = E_AC_PJ) -> None:
        self.model = model
        self.e_mac_pj, self.e_ac_pj = float(e_mac_pj), float(e_ac_pj)
        self._layers = energy_layers(model)
        self._probes = {name: _RateProbe() for name, _ in self._layers}
        self._inputs: tuple[torch.Tensor, ...] = ()
        self._shapes: tuple | None = None
        self._flops: dict[str, dict[str, float]] = {}
        self._other_flops: dict[str, float] = {}
        self._recording = True
        self._handles: list = []
        self._attach()

    # -- hooks
    def _model_hook(self, module: nn.Module, args: tuple) -> None:
        if self._recording:
            self._inputs = tuple(a for a in args if isinstance(a, torch.Tensor))
            for probe in self._probes.values():
                probe.total, probe.numel, probe.spiking, probe.calls = 0.0, 0, True, 0

    def _layer_hook(self, name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            if not self._recording or not args or not isinstance(args[0], torch.Tensor):
                return
            x = args[0].detach()
            probe = self._probes[name]
            probe.calls += 1
            probe.numel += x.numel()
            probe.total += float(x.sum())
            # raw model inputs and non-integer inputs are real-valued: MACs, not spike accumulates
            if any(x is inp or x.data_ptr() == inp.data_ptr() for inp in self._inputs) or \
                    bool(x.min() < 0) or not torch.equal(x, torch.round(x)):
                probe.spiking = False
        return hook

    def _attach(self) -> None:
        if self._handles:
            return
        self._handles = [self.model.register_forward_pre_hook(self._model_hook)]
        for name, module in self._layers:
            self._handles.append(module.register_forward_pre_hook(self._layer_hook(name)))

    def close(self) -> None:
        """Remove the hooks from the model (the last recorded window can still be reported)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> 'EnergyMeter':
        """Record the forward passes inside the block: ``with meter: model(a, v)``, then ``report()``.

        Re-entering re-attaches the hooks, so one meter can wrap every window of a runtime.
        """
        self._attach()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- FLOPs
    def _count_flops(self) -> None:
        shapes = tuple(tuple(t.shape) for t in self._inputs)
        if shapes == self._shapes:
            return
        was_training = self.model.training
        self._recording = False
        try:
            self.model.eval()
            dummy = [torch.zeros(s) for s in shapes]
            # the architecture's MACs: the training-time computations, not the inference fast paths
            # (a one-channel stem padded to two, event-driven native convolutions the counter cannot see)
            with torch.no_grad(), reference_paths(), FlopCounterMode(display=False) as counter:
                self.model(*dummy)
        finally:
            self._recording = True
            self.model.train(was_training)
        prefix = type(self.model).__name__
        counts = {}
        for key, ops in counter.get_flop_counts().items():
            if key == prefix:
                counts[''] = ops
            elif key.startswith(prefix + '.'):
                counts[key[len(prefix) + 1:]] = ops
        self._flops = {name: {str(op): float(n) for op, n in ops.items()} for name, ops in counts.items()}
        self._other_flops = self._self_flops()
        self._shapes = shapes

    def _self_flops(self) -> dict[str, float]:
        """FLOPs done by modules other than the energy layers (e.g. attention products), per module.

        A module's own FLOPs are its count minus the counts of its nearest counted descendants
        (containers such as ModuleDict are never called, so they have no count of their own).
        """
        covered = [name for name, _ in self._layers]
        counted = sorted(n for n in self._flops if n not in covered and
                         not any(n.startswith(c + '.') for c in covered))
        totals = {n: sum(ops.values()) for n, ops in self._flops.items()}
        out = {}
        for name in counted:
            prefix = name + '.' if name else ''
            below = [n for n in self._flops if n != name and n.startswith(prefix)]
            nearest = [n for n in below if not any(n.startswith(b + '.') for b in below if b != n)]
            own = totals[name] - sum(totals[n] for n in nearest)
            if own > 0:
                out[name or '(model)'] = own
        return out

    # -- reports
    def report(self) -> EnergyReport:
        """Energy of the last forward pass per sample (needs one forward since the meter was made)."""
        if not self._inputs:
            raise RuntimeError('EnergyMeter.report() needs a forward pass of the model first')
        self._count_flops()
        batch = self._inputs[0].shape[1] if self._inputs[0].dim() >= 2 else 1   # inputs are (T, B, ...)
        per_layer = []
        for name, _ in self._layers:
            probe = self._probes[name]
            macs = sum(self._flops.get(name, {}).values()) / FLOPS_PER_MAC / batch
            if probe.calls == 0 or macs == 0:
                continue
            if probe.spiking:
                rate = probe.total / probe.numel if probe.numel else 0.0
                per_layer.append(LayerEnergy(name, 'sop', macs, rate, macs * rate * self.e_ac_pj / PJ_PER_MJ))
            else:
                per_layer.append(LayerEnergy(name, 'mac', macs, 1.0, macs * self.e_mac_pj / PJ_PER_MJ))
        for name, flops in self._other_flops.items():
            macs = flops / FLOPS_PER_MAC / batch
            per_layer.append(LayerEnergy(name, 'mac', macs, 1.0, macs * self.e_mac_pj / PJ_PER_MJ))
        return EnergyReport(sum(layer.mj for layer in per_layer), per_layer)

    def measure(self, audio: torch.Tensor, visual: torch.Tensor) -> EnergyReport:
        """Run one no-grad forward on ``audio``/``visual`` and report its energy per sample."""
        with torch.no_grad():
            self.model(audio, visual)
        return self.report()


def estimate_energy(model: nn.Module, audio: torch.Tensor, visual: torch.Tensor) -> EnergyReport:
    """One-shot energy estimate of ``model`` on one batch of windows (per sample)."""
    with EnergyMeter(model) as meter:
        return meter.measure(audio, visual)
