"""Output agreement: every check that two inference paths compute the same thing, in one place.

The reference is always the torch model in fp32 on the CPU. Three entry points share the scoring:

- :func:`agreement`: a cheap summary of one path against the reference on outputs already computed
  (the bench's column: argmax equal, max |diff| over the outputs the model really has);
- :func:`compare_runtimes`: runs torch, onnxruntime (CPU) and, where it can run, TensorRT on the same
  windows and checks each against :data:`DEFAULT_TOLERANCES` (``scripts/jetson_check.sh`` adds an
  independent ``polygraphy run --trt --onnxrt`` comparison on a GPU machine; this module uses
  onnxruntime's own API so it answers the same on a robot without polygraphy);
- :func:`compare_onnx`: the export's gate, torch against the ONNX file on onnxruntime.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .backends.base import BackendUnavailable
from .backends.onnx_graph import static_batch
from .contract import FUSED_OUTPUT, OUTPUT_NAMES, outputs_by_name, real_outputs

Outputs = Mapping[str, np.ndarray] | Sequence[np.ndarray]


@dataclass(frozen=True)
class Tolerance:
    """Elementwise ``|x - ref| <= atol + rtol * |ref|`` on every real output head, plus (optionally)
    the same argmax of the fused logits for every window."""

    atol: float
    rtol: float = 0.0
    require_argmax_agreement: bool = True


#: per precision of the runtime under test; the reference is always torch fp32 on the CPU.
#: fp32: all runtimes compute in float32, so only summation order differs.
#: fp16: half-precision storage and math (about 3 significant digits) on logits of order 1-10; a
#: spiking network can also flip a spike whose membrane potential sits at the threshold, so the class
#: decision (argmax) is the criterion that matters and the logit bound is deliberately loose.
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    'fp32': Tolerance(atol=1e-4),
    'fp16': Tolerance(atol=1e-2, rtol=1e-2),
}


@dataclass
class OutputDiff:
    name: str
    max_abs: float
    mean_abs: float
    within_tolerance: bool


@dataclass
class RuntimeResult:
    """One runtime compared with the torch reference."""

    runtime: str                      # 'onnxruntime', 'tensorrt'
    precision: str                    # 'fp32' / 'fp16'
    ran: bool
    skipped_reason: str | None = None
    tolerance: Tolerance | None = None
    outputs: list[OutputDiff] = field(default_factory=list)
    argmax_agreement: float | None = None   # fraction of windows with the same predicted class
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool | None:
        """None when the runtime did not run (never counted as a pass)."""
        if not self.ran:
            return None
        ok = all(o.within_tolerance for o in self.outputs)
        if self.tolerance and self.tolerance.require_argmax_agreement:
            ok = ok and self.argmax_agreement == 1.0
        return ok


@dataclass
class RuntimeComparison:
    windows: int
    reference: str = 'torch fp32 (CPU)'
    results: list[RuntimeResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every runtime that ran is within tolerance and at least one ran."""
        ran = [r for r in self.results if r.ran]
        return bool(ran) and all(r.passed for r in ran)

    def summary(self) -> str:
        lines = [f'reference: {self.reference}; {self.windows} window(s)']
        for r in self.results:
            label = f'{r.runtime} {r.precision}'
            if not r.ran:
                lines.append(f'  {label}: NOT RUN ({r.skipped_reason})')
                continue
            diffs = ', '.join(f'{o.name} max|d|={o.max_abs:.2e}' for o in r.outputs)
            tol = r.tolerance
            lines.append(f'  {label}: {"PASS" if r.passed else "FAIL"} (atol={tol.atol:g} rtol={tol.rtol:g}; '
                         f'{diffs}; argmax agreement {r.argmax_agreement:.3f})')
        return '\n'.join(lines)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for entry, result in zip(data['results'], self.results):
            entry['passed'] = result.passed
        data['passed'] = self.passed
        return data


def _check_windows(windows: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    if not windows:
        raise ValueError('compare_runtimes needs at least one (audio, visual) window')
    checked = []
    for i, pair in enumerate(windows):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f'window {i}: expected an (audio, visual) pair')
        audio, visual = (np.ascontiguousarray(x, dtype=np.float32) for x in pair)
        if audio.ndim != 5 or visual.ndim != 5:
            raise ValueError(f'window {i}: audio/visual must be (T, B, C, H, W), got {audio.shape} / {visual.shape}')
        checked.append((audio, visual))
    return checked


def _split_batches(windows, batch: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cut windows of a larger batch into single windows when the graph takes batch 1 (as the backends do)."""
    if batch != 1:
        return list(windows)
    return [(audio[:, b:b + 1], visual[:, b:b + 1]) for audio, visual in windows for b in range(audio.shape[1])]


def _heads(card, model) -> tuple[str, ...]:
    """Names of the outputs that carry real values (a unimodal model's missing head is zeros)."""
    return real_outputs(getattr(card, 'modality_heads', None) or getattr(model, 'modality_heads', None))


def _diff(name: str, got: np.ndarray, ref: np.ndarray, tol: Tolerance) -> OutputDiff:
    if got.shape != ref.shape:
        return OutputDiff(name, float('inf'), float('inf'), False)
    delta = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    bound = tol.atol + tol.rtol * np.abs(ref.astype(np.float64))
    return OutputDiff(name, float(delta.max(initial=0.0)), float(delta.mean()) if delta.size else 0.0,
                      bool(np.all(delta <= bound)))


def _score(runtime: str, precision: str, outputs: list[dict[str, np.ndarray]],
           reference: list[dict[str, np.ndarray]], heads: tuple[str, ...], tol: Tolerance,
           info: dict[str, Any] | None = None) -> RuntimeResult:
    result = RuntimeResult(runtime=runtime, precision=precision, ran=True, tolerance=tol, info=info or {})
    for head in heads:
        got = np.concatenate([o[head] for o in outputs])
        ref = np.concatenate([r[head] for r in reference])
        result.outputs.append(_diff(head, got, ref, tol))
    got = np.concatenate([o['logits'] for o in outputs]).argmax(axis=-1)
    ref = np.concatenate([r['logits'] for r in reference]).argmax(axis=-1)
    result.argmax_agreement = float(np.mean(got == ref)) if ref.size else None
    return result


def _run_torch(model, windows) -> list[dict[str, np.ndarray]]:
    import torch
    out = []
    with torch.no_grad():
        for audio, visual in windows:
            values = model(torch.from_numpy(audio), torch.from_numpy(visual))
            out.append({name: v.detach().cpu().numpy().astype(np.float32) for name, v in zip(OUTPUT_NAMES, values)})
    return out


def _run_onnxruntime(onnx_path: Path, windows) -> list[dict[str, np.ndarray]]:
    from .backends.onnxruntime_backend import create_session, run_session
    session = create_session(onnx_path)
    return [{name: np.asarray(value, dtype=np.float32) for name, value in run_session(session, a, v).items()}
            for a, v in windows]


def _run_tensorrt(onnx_path: Path, card, windows, precision: str, engine_dir: Path | None):
    from .backends import tensorrt_backend
    backend = tensorrt_backend.TensorRTBackend.from_onnx(
        onnx_path, enable_fp16=(precision == 'fp16'), cache_dir=engine_dir,
        modality_heads=getattr(card, 'modality_heads', None))
    try:
        return [backend.infer(audio, visual).outputs() for audio, visual in windows], dict(backend.info)
    finally:
        backend.close()


def compare_runtimes(onnx_path: str | Path, card, inputs: Sequence[tuple[np.ndarray, np.ndarray]],
                     tolerances: Mapping[str, Tolerance] | None = None, *, model=None,
                     runtimes: Iterable[str] = ('onnxruntime', 'tensorrt'),
                     tensorrt_precisions: Iterable[str] = ('fp32', 'fp16'),
                     engine_dir: str | Path | None = None) -> RuntimeComparison:
    """Run torch (reference) and each runtime on the same windows and compare them.

    Args:
        onnx_path: the exported model.
        card: its :class:`~av_snn_ros.model_card.ModelCard` (the torch model and the real output heads
            come from it); may be None when ``model`` is given.
        inputs: ``(audio, visual)`` windows in the model contract, ``(T, B, C, H, W)`` float32; a batch
            larger than the graph's batch of 1 is run window by window.
        tolerances: per precision; defaults to :data:`DEFAULT_TOLERANCES`.
        model: a torch module to use instead of ``card.load_torch_model()``.
        runtimes: which of ``onnxruntime`` / ``tensorrt`` to run.
        tensorrt_precisions: engine precisions to build and compare.
        engine_dir: engine cache folder for the TensorRT runs (default: the engine cache).

    A runtime that cannot run here (no TensorRT, no GPU) is recorded with ``ran=False`` and the reason:
    it is never reported as passing.
    """
    tolerances = {**DEFAULT_TOLERANCES, **(tolerances or {})}
    onnx_path = Path(onnx_path)
    windows = _split_batches(_check_windows(inputs), static_batch(onnx_path))
    if model is None:
        if card is None:
            raise ValueError('compare_runtimes needs a model card or a torch model')
        model = card.load_torch_model()
    model.eval()
    heads = _heads(card, model)
    reference = _run_torch(model, windows)
    comparison = RuntimeComparison(windows=len(windows))
    runtimes = tuple(runtimes)
    unknown = set(runtimes) - {'onnxruntime', 'tensorrt'}
    if unknown:
        raise ValueError(f'unknown runtime(s) {sorted(unknown)}; choose onnxruntime and/or tensorrt')
    if 'onnxruntime' in runtimes:
        outputs = _run_onnxruntime(onnx_path, windows)
        comparison.results.append(_score('onnxruntime', 'fp32', outputs, reference, heads, tolerances['fp32'],
                                         info={'providers': ['CPUExecutionProvider']}))
    if 'tensorrt' in runtimes:
        for precision in tensorrt_precisions:
            if precision not in tolerances:
                raise ValueError(f'no tolerance for precision {precision!r}')
            try:
                outputs, info = _run_tensorrt(onnx_path, card, windows, precision,
                                              Path(engine_dir) if engine_dir else None)
            except BackendUnavailable as exc:
                comparison.results.append(RuntimeResult('tensorrt', precision, ran=False, skipped_reason=str(exc),
                                                        tolerance=tolerances[precision]))
                continue
            comparison.results.append(_score('tensorrt', precision, outputs, reference, heads,
                                             tolerances[precision], info=info))
    return comparison


def _named(outputs: Outputs) -> Mapping[str, np.ndarray]:
    return outputs if isinstance(outputs, Mapping) else outputs_by_name(list(outputs))


def agreement(reference: Outputs, other: Outputs, heads: Iterable[str] | None) -> dict[str, Any]:
    """argmax equality of the fused logits and max |diff| over the outputs a model with ``heads`` has.

    ``reference`` and ``other`` are one call's outputs, by name or in contract order. ``logits_nonzero``
    says whether the check meant anything (an untrained SNN whose spikes die gives all-zero logits).
    """
    ref, got = _named(reference), _named(other)
    diff = max(_diff(name, np.asarray(got[name]), np.asarray(ref[name]), DEFAULT_TOLERANCES['fp32']).max_abs
               for name in real_outputs(heads))
    return {'argmax_equal': bool(np.array_equal(ref[FUSED_OUTPUT].argmax(-1), got[FUSED_OUTPUT].argmax(-1))),
            'max_abs_diff': diff, 'logits_nonzero': bool(np.any(np.asarray(ref[FUSED_OUTPUT]) != 0))}


def compare_onnx(path: str | Path, model, audio: np.ndarray, visual: np.ndarray,
                 tolerance: Tolerance = DEFAULT_TOLERANCES['fp32']) -> dict[str, Any]:
    """The torch ``model`` against the ONNX file on onnxruntime (CPU) for one input batch.

    Returns ``max_abs_diff`` over the real outputs, ``argmax_equal`` of the fused logits for every
    window, and ``passed`` (within ``tolerance``).
    """
    was_training = model.training
    try:
        result = compare_runtimes(path, None, [(audio, visual)], {'fp32': tolerance}, model=model,
                                  runtimes=('onnxruntime',)).results[0]
    finally:
        model.train(was_training)
    return {'max_abs_diff': max(o.max_abs for o in result.outputs),
            'argmax_equal': result.argmax_agreement == 1.0, 'passed': bool(result.passed)}
