"""ONNX graph hygiene for a static TensorRT build, checked without TensorRT; constant folding.

:func:`check_onnx_for_tensorrt` answers "will this file build into a static TensorRT engine, and is it
tidy?": onnx's checker, strict shape inference, static I/O shapes, opset, an operator allow-list taken
from the ONNX-TensorRT operator support matrix, single-file weights (the model card's sha256 must cover
them), and how much of the graph is still computable from constants (shape arithmetic left by an
exporter). It can fold constants itself (onnxruntime's basic graph optimisation) and report what
folding would leave. The TensorRT backend quotes it when a parse or build fails; the exporter folds with
:func:`fold_constants`; ``python -m av_snn_ros.tools.onnx_checks MODEL.onnx`` prints the report.
"""
from __future__ import annotations

import dataclasses
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

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


def static_batch(onnx_path: str | Path) -> int | None:
    """The static batch (dim 1) of the graph's first input, or None when it is not a static int."""
    import onnx
    model = onnx.load(str(onnx_path), load_external_data=False)
    dims = _dims(model.graph.input[0]) if model.graph.input else ()
    return dims[1] if len(dims) > 1 and isinstance(dims[1], int) and dims[1] > 0 else None


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

    from .onnxruntime_backend import create_session
    create_session(src, basic_optimizations_only=True, optimized_model_path=dst)
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
                   '--fold-constants, or av_snn_ros.backends.onnx_graph.fold_constants)')
        (report.errors if strict else report.warnings).append(message)
    return report
