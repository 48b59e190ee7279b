"""ONNX graph hygiene for TensorRT, and numeric agreement between torch, onnxruntime and TensorRT.

:func:`check_onnx_for_tensorrt` answers "will this file build into a static TensorRT engine, and is it
tidy?" without TensorRT: onnx's checker, strict shape inference, static I/O shapes, opset, an operator
allow-list taken from the ONNX-TensorRT operator support matrix, single-file weights (the model card's
sha256 must cover them), and how much of the graph is still computable from constants (shape
arithmetic left by an exporter). It can fold constants itself (onnxruntime's basic graph optimisation)
and report what folding would leave.

:func:`compare_runtimes` runs the torch model (the reference), onnxruntime on the CPU, and TensorRT
where it can run, on the same windows, and checks each against :data:`DEFAULT_TOLERANCES`. It uses
onnxruntime's own Python API (not polygraphy's runner: this module must give the same answers on a
robot without polygraphy); ``scripts/jetson_check.sh`` adds an independent ``polygraphy run --trt
--onnxrt`` comparison on a GPU machine.

Run ``python -m av_snn_ros.onnx_checks MODEL.onnx`` for a printed report (exit 1 on errors).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

#: lowest default-domain opset accepted (LayerNormalization is a function op from 17; TensorRT 8.6 targets it)
MIN_OPSET = 17
#: newest opset that TensorRT 8.6's ONNX parser documentation covers; newer files need TensorRT 10.x
TRT86_DOCUMENTED_OPSET = 17
#: protobuf cannot hold a model over 2 GiB in one file
PROTOBUF_LIMIT_BYTES = 2 ** 31 - 1

#: ONNX operators marked supported ("Y") in the ONNX-TensorRT operator matrix (onnx/onnx-tensorrt
#: docs/operators.md, TensorRT 8.5 table) plus LayerNormalization (native from TensorRT 8.6). Support
#: only grows in 10.x, so a graph inside this set parses on both 8.6 and 10.x. Restrictions that the
#: matrix lists (e.g. Conv weights must be initializers, Slice axes constant) are not re-checked here:
#: the exporter already produces them that way and the TensorRT parse in jetson_check.sh is the judge.
TENSORRT_SUPPORTED_OPS = frozenset('''
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu
Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div
Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gemm
GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GRU HardSigmoid HardSwish
Identity If ImageScaler InstanceNormalization IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log
LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mod
Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear
RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2
ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu
Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu
Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze
Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
'''.split())
#: parsed by TensorRT, but data-dependent control flow defeats a static, fully-optimised engine (and
#: DLA); a window model has a fixed T, so an exporter that emits these has traced something wrong
CONTROL_FLOW_OPS = frozenset({'Loop', 'Scan', 'If'})
#: random ops have no place in an inference graph (and TensorRT ignores their seeds)
RANDOM_OPS = frozenset({'RandomNormal', 'RandomNormalLike', 'RandomUniform', 'RandomUniformLike',
                        'Bernoulli', 'Multinomial'})
_SHAPE_OPS = frozenset({'Shape', 'Size'})
_DEFAULT_DOMAINS = ('', 'ai.onnx')


# --------------------------------------------------------------------------------------------------
# graph hygiene
# --------------------------------------------------------------------------------------------------

@dataclass
class OnnxCheckReport:
    """What :func:`check_onnx_for_tensorrt` found. ``ok`` is False when any ``errors`` exist."""

    path: Path
    size_bytes: int = 0
    ir_version: int | None = None
    opset: int | None = None
    producer: str = ''
    inputs: dict[str, tuple] = field(default_factory=dict)      # name -> dims (int, or str if symbolic)
    outputs: dict[str, tuple] = field(default_factory=dict)
    input_dtypes: dict[str, str] = field(default_factory=dict)
    op_counts: dict[str, int] = field(default_factory=dict)
    node_count: int = 0
    initializer_count: int = 0
    initializer_bytes: int = 0
    external_data_files: list[str] = field(default_factory=list)
    foldable_nodes: int = 0           # nodes whose outputs depend only on constants / static shapes
    shape_ops: int = 0                # Shape/Size nodes left in the graph
    folding: dict[str, Any] | None = None   # result of trial folding, when run
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data['path'] = str(self.path)
        data['ok'] = self.ok
        return data

    def summary(self) -> str:
        """A short human-readable report."""
        lines = [f'{self.path}: {"OK" if self.ok else "NOT READY"} for TensorRT '
                 f'({self.size_bytes / 1e6:.2f} MB, opset {self.opset}, {self.node_count} nodes, '
                 f'{self.initializer_count} initializers)']
        for name, dims in {**self.inputs, **self.outputs}.items():
            kind = 'input ' if name in self.inputs else 'output'
            lines.append(f'  {kind} {name}: {list(dims)} {self.input_dtypes.get(name, "")}'.rstrip())
        lines.append('  ops: ' + ', '.join(f'{op} x{n}' for op, n in sorted(self.op_counts.items())))
        lines.append(f'  constant-foldable nodes: {self.foldable_nodes}; Shape/Size nodes: {self.shape_ops}')
        if self.folding:
            lines.append(f'  after folding ({self.folding["method"]}): {self.folding["node_count"]} nodes, '
                         f'{self.folding["foldable_nodes"]} foldable, {self.folding["shape_ops"]} Shape/Size')
        lines += [f'  ERROR: {e}' for e in self.errors] + [f'  warning: {w}' for w in self.warnings]
        return '\n'.join(lines)


def _dims(value_info) -> tuple:
    """Dims of a ValueInfoProto: int where known, the symbol (or '?') where not."""
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField('shape'):
        return ('?',)
    return tuple(d.dim_value if d.HasField('dim_value') else (d.dim_param or '?')
                 for d in tensor_type.shape.dim)


def _is_static(dims: tuple) -> bool:
    return all(isinstance(d, int) and d > 0 for d in dims)


def _default_opset(model) -> int | None:
    for imp in model.opset_import:
        if imp.domain in _DEFAULT_DOMAINS:
            return int(imp.version)
    return None


def _foldable_analysis(graph, static_shapes: Mapping[str, tuple]) -> tuple[int, int, set[str]]:
    """``(foldable_nodes, shape_ops, constant_tensors)`` of a topologically sorted graph.

    A node is foldable when every input is an initializer, a Constant output or a foldable node's
    output, or when it is Shape/Size of a tensor whose shape is static: a folder can replace it by a
    constant. Constant nodes themselves are not counted (they already are constants).
    """
    constant = {init.name for init in graph.initializer} | {''}   # '' = omitted optional input
    foldable = 0
    shape_ops = 0
    for node in graph.node:
        if node.op_type in _SHAPE_OPS:
            shape_ops += 1
        if node.op_type == 'Constant':
            constant.update(node.output)
            continue
        if node.op_type in RANDOM_OPS or node.domain not in _DEFAULT_DOMAINS:
            continue
        from_constants = all(name in constant for name in node.input)
        static_shape_query = (node.op_type in _SHAPE_OPS and node.input
                              and _is_static(static_shapes.get(node.input[0], ('?',))))
        if from_constants or static_shape_query:
            foldable += 1
            constant.update(node.output)
    return foldable, shape_ops, constant - {''}


def _tensor_bytes(tensor) -> int:
    from onnx.helper import tensor_dtype_to_np_dtype
    try:
        itemsize = tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError, ValueError):   # string / undefined element types
        return len(tensor.raw_data)
    return int(np.prod(tensor.dims, dtype=np.int64)) * itemsize


def _external_data_files(model) -> list[str]:
    from onnx.external_data_helper import uses_external_data
    files = set()
    for init in model.graph.initializer:
        if uses_external_data(init):
            files.update(e.value for e in init.external_data if e.key == 'location')
    return sorted(files)


def _analyse(model) -> tuple[int, int, set[str]]:
    """Shape-infer ``model`` (strict); return foldable count, Shape/Size count and constant tensors."""
    import onnx
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    shapes = {vi.name: _dims(vi) for vi in
              list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    return _foldable_analysis(inferred.graph, shapes)


def fold_constants(src: str | Path, dst: str | Path) -> Path:
    """Write a constant-folded copy of ``src`` to ``dst`` with onnxruntime's basic graph optimisation.

    Basic level only applies semantics-preserving rewrites that keep standard ONNX operators (constant
    folding, redundant-node elimination, e.g. MatMul+Add -> Gemm). Unused opset imports that
    onnxruntime adds are dropped again so the file stays a plain ONNX model.
    """
    import onnx
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), options, providers=['CPUExecutionProvider'])
    model = onnx.load(str(dst))
    used = {node.domain for node in model.graph.node} | {''}
    keep = [imp for imp in model.opset_import if imp.domain in used or imp.domain in _DEFAULT_DOMAINS]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    onnx.save(model, str(dst))
    return Path(dst)


def check_onnx_for_tensorrt(path: str | Path, fold: bool = True, strict: bool = False) -> OnnxCheckReport:
    """Check an ONNX file for a static TensorRT build; see the module docstring for the checks.

    Args:
        path: the ONNX file.
        fold: when the graph still has constant-foldable nodes, fold a temporary copy with
            onnxruntime and report what remains (``report.folding``).
        strict: treat leftover foldable nodes and Shape/Size nodes as errors instead of warnings.
    """
    import onnx
    path = Path(path)
    report = OnnxCheckReport(path=path)
    if not path.is_file():
        report.errors.append(f'ONNX file not found: {path}')
        return report
    report.size_bytes = path.stat().st_size
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and others for garbage files
        report.errors.append(f'cannot parse ONNX protobuf: {exc}')
        return report
    graph = model.graph
    report.ir_version = int(model.ir_version)
    report.producer = f'{model.producer_name} {model.producer_version}'.strip()
    report.opset = _default_opset(model)
    report.node_count = len(graph.node)
    report.op_counts = dict(Counter(node.op_type for node in graph.node))
    report.initializer_count = len(graph.initializer)
    report.external_data_files = _external_data_files(model)
    report.initializer_bytes = sum(_tensor_bytes(init) for init in graph.initializer)

    if report.external_data_files:
        report.errors.append(
            f'weights are stored outside the .onnx file ({", ".join(report.external_data_files)}): the model '
            "card's sha256 would not cover them; export with external_data=False (single file)")
    elif report.size_bytes > PROTOBUF_LIMIT_BYTES:
        report.errors.append('model exceeds the 2 GiB protobuf limit')

    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx.checker.ValidationError, or C++ errors for broken graphs
        report.errors.append(f'onnx.checker: {exc}')

    if report.opset is None:
        report.errors.append('model imports no default-domain (ai.onnx) opset')
    elif report.opset < MIN_OPSET:
        report.errors.append(f'opset {report.opset} < {MIN_OPSET}: re-export with opset_version>={MIN_OPSET}')
    elif report.opset > TRT86_DOCUMENTED_OPSET:
        report.warnings.append(
            f'opset {report.opset} is newer than the {TRT86_DOCUMENTED_OPSET} that TensorRT 8.6 (JetPack 6.0) '
            'documents; TensorRT 10.x (JetPack 6.1+) parses it. Check the parse on the target '
            '(scripts/jetson_check.sh)')

    initializer_names = {init.name for init in graph.initializer}
    for vi in graph.input:
        if vi.name in initializer_names:      # IR<4 style: initializers listed as inputs
            continue
        report.inputs[vi.name] = _dims(vi)
        elem = vi.type.tensor_type.elem_type
        report.input_dtypes[vi.name] = onnx.TensorProto.DataType.Name(elem)
        if elem != onnx.TensorProto.FLOAT:
            report.warnings.append(f'input {vi.name} is {report.input_dtypes[vi.name]}, not FLOAT: '
                                   'the runtime feeds float32 windows')
    for vi in graph.output:
        report.outputs[vi.name] = _dims(vi)
    for kind, values in (('input', report.inputs), ('output', report.outputs)):
        for name, dims in values.items():
            if not _is_static(dims):
                report.errors.append(f'{kind} {name} has non-static shape {list(dims)}: export with fixed '
                                     'window shapes (no dynamic_axes / dynamic_shapes)')
    for name in report.outputs:
        if name in report.inputs:
            report.warnings.append(f'output {name} is a graph input passed through unchanged')
    consumed = {name for node in graph.node for name in node.input}
    unused = [name for name in report.inputs if name not in consumed]
    if unused:
        report.warnings.append(f'input(s) {", ".join(unused)} feed no node: TensorRT drops unused inputs '
                               'from the engine (the TensorRT backend then does not feed them)')

    non_standard = sorted({f'{n.domain}::{n.op_type}' for n in graph.node if n.domain not in _DEFAULT_DOMAINS})
    if non_standard:
        report.errors.append('custom-domain ops need TensorRT plugins: ' + ', '.join(non_standard))
    ops = set(report.op_counts) - {n.op_type for n in graph.node if n.domain not in _DEFAULT_DOMAINS}
    unsupported = sorted(ops - TENSORRT_SUPPORTED_OPS)
    if unsupported:
        report.errors.append('ops outside the TensorRT-supported list: ' + ', '.join(unsupported))
    for bad, why in ((CONTROL_FLOW_OPS, 'control flow prevents a static engine; unroll T at export'),
                     (RANDOM_OPS, 'random ops do not belong in an inference graph')):
        found = sorted(ops & bad)
        if found:
            report.errors.append(f'{", ".join(found)}: {why}')

    try:
        report.foldable_nodes, report.shape_ops, constants = _analyse(model)
    except Exception as exc:  # InferenceError and C++ errors name the failing node
        report.errors.append(f'strict shape inference failed: {exc}')
        return report
    constant_outputs = [name for name in report.outputs if name in constants]
    if constant_outputs:
        # the ONNX-TensorRT parser has rejected constant graph outputs ("is_tensor()" assertion) in
        # some versions; a head the model does not have is safer exported as ``0 * logits``
        report.warnings.append(f'output(s) {", ".join(constant_outputs)} do not depend on the inputs '
                               '(constants): some TensorRT ONNX parsers reject constant network outputs')

    leftovers = []
    if report.foldable_nodes:
        leftovers.append(f'{report.foldable_nodes} node(s) compute only from constants or static shapes')
    if report.shape_ops:
        leftovers.append(f'{report.shape_ops} Shape/Size node(s) remain')
    if leftovers and fold and not report.external_data_files:
        with tempfile.TemporaryDirectory(prefix='av_snn_fold_') as tmp:
            try:
                folded = fold_constants(path, Path(tmp) / 'folded.onnx')
                folded_model = onnx.load(str(folded))
                f_foldable, f_shape, _ = _analyse(folded_model)
                report.folding = {'method': 'onnxruntime ORT_ENABLE_BASIC', 'node_count': len(folded_model.graph.node),
                                  'foldable_nodes': f_foldable, 'shape_ops': f_shape}
            except Exception as exc:  # folding is advisory; its failure must not hide the report
                report.warnings.append(f'trial constant folding failed: {exc}')
    if leftovers:
        message = ('; '.join(leftovers) + ': fold constants before building (polygraphy surgeon sanitize '
                   '--fold-constants, or av_snn_ros.onnx_checks.fold_constants)')
        (report.errors if strict else report.warnings).append(message)
    return report


# --------------------------------------------------------------------------------------------------
# runtime agreement
# --------------------------------------------------------------------------------------------------

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


def _graph_batch(onnx_path: Path) -> int | None:
    """The static batch (dim 1) of the graph's first input, or None when it is not a static int."""
    import onnx
    model = onnx.load(str(onnx_path), load_external_data=False)
    dims = _dims(model.graph.input[0]) if model.graph.input else ()
    return dims[1] if len(dims) > 1 and isinstance(dims[1], int) and dims[1] > 0 else None


def _split_batches(windows, batch: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cut windows of a larger batch into single windows when the graph takes batch 1 (as the backends do)."""
    if batch != 1:
        return list(windows)
    return [(audio[:, b:b + 1], visual[:, b:b + 1]) for audio, visual in windows for b in range(audio.shape[1])]


def _heads(card, model) -> tuple[str, ...]:
    """Names of the outputs that carry real values (a unimodal model's missing head is zeros)."""
    from .export import OUTPUT_NAMES
    modality = tuple(getattr(card, 'modality_heads', None) or getattr(model, 'modality_heads', None)
                     or ('audio', 'visual'))
    return ('logits',) + tuple(f'{m}_logits' for m in modality if f'{m}_logits' in OUTPUT_NAMES)


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

    from .export import OUTPUT_NAMES
    out = []
    with torch.no_grad():
        for audio, visual in windows:
            values = model(torch.from_numpy(audio), torch.from_numpy(visual))
            out.append({name: v.detach().cpu().numpy().astype(np.float32) for name, v in zip(OUTPUT_NAMES, values)})
    return out


def _run_onnxruntime(onnx_path: Path, windows) -> list[dict[str, np.ndarray]]:
    import onnxruntime as ort

    from .export import INPUT_NAMES, OUTPUT_NAMES
    session = ort.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider'])
    in_names = [i.name for i in session.get_inputs()]
    out_names = [o.name for o in session.get_outputs()]
    feed_names = list(INPUT_NAMES) if set(INPUT_NAMES) == set(in_names) else in_names
    results = []
    for audio, visual in windows:
        values = session.run(None, dict(zip(feed_names, (audio, visual))))
        by_name = dict(zip(out_names, values))
        if not set(OUTPUT_NAMES) <= set(by_name):     # unnamed export: positional contract order
            by_name = dict(zip(OUTPUT_NAMES, values))
        results.append({name: np.asarray(by_name[name], dtype=np.float32) for name in OUTPUT_NAMES})
    return results


def _run_tensorrt(onnx_path: Path, card, windows, precision: str, engine_dir: Path | None):
    from .backends import tensorrt_backend
    backend = tensorrt_backend.TensorRTBackend.from_onnx(
        onnx_path, enable_fp16=(precision == 'fp16'), cache_dir=engine_dir,
        modality_heads=getattr(card, 'modality_heads', None))
    try:
        outs = []
        for audio, visual in windows:
            res = backend.infer(audio, visual)
            outs.append({'logits': res.logits,
                         'audio_logits': res.audio_logits if res.audio_logits is not None else 0 * res.logits,
                         'visual_logits': res.visual_logits if res.visual_logits is not None else 0 * res.logits})
        return outs, dict(backend.info)
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
    windows = _split_batches(_check_windows(inputs), _graph_batch(onnx_path))
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
        from .backends.base import BackendUnavailable
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


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m av_snn_ros.onnx_checks',
                                     description='Check an ONNX file for a static TensorRT build.')
    parser.add_argument('onnx', type=Path, help='the .onnx file')
    parser.add_argument('--strict', action='store_true', help='leftover constant subgraphs are errors')
    parser.add_argument('--no-fold', action='store_true', help='skip the trial constant folding')
    parser.add_argument('--json', action='store_true', help='print the report as JSON')
    args = parser.parse_args(argv)
    report = check_onnx_for_tensorrt(args.onnx, fold=not args.no_fold, strict=args.strict)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0 if report.ok else 1


if __name__ == '__main__':
    sys.exit(main())
