"""The classifier node's parameters: one table of specs -> descriptors, declaration and typed settings.

Defaults live here (and in ``WindowParams``) only; params files override them, launch files pass files
and overrides, never copies of the defaults. Window length W and timesteps T are *not* parameters: they
come from the model card's preprocessing, so a node can never feed a model windows it was not trained on.

Parameters are read at ``configure``; changing one on a configured node takes effect at the next
cleanup -> configure. Structural ones (model, backend, input type, QoS) are read-only after start-up.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..backends.base import available_backends, backend_parameters, options_from_parameters
from ..windowing import GAP_POLICIES, WindowParams
from .conversions import DEFAULT_MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE
from .diagnostic_conventions import DEFAULT_PERIOD_S, PERIOD_PARAM, USE_FQN_PARAM

RELIABILITIES = ('auto', 'best_effort', 'reliable')
#: ``inference.accept_threshold`` default: negative = use the model card's
ACCEPT_THRESHOLD_FROM_CARD = -1.0


def _default_card() -> str:
    try:
        from ..paths import default_model_card
        return str(default_model_card())
    except FileNotFoundError:
        return ''


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter. ``range`` is inclusive; ``choices`` lists valid strings."""

    name: str
    default: Any
    description: str
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    read_only: bool = False

    @property
    def is_float(self) -> bool:
        return isinstance(self.default, float)


_W = WindowParams()


def param_specs() -> tuple[ParamSpec, ...]:
    """Every parameter of ``av_classifier``, in documentation order."""
    return (
        ParamSpec('model.card', _default_card(),
                  'Model card (card.yaml or its folder): model, weights, ONNX, labels and preprocessing '
                  '(window length, timesteps, sample rate). Default: the shipped default model.',
                  read_only=True),
        ParamSpec('backend.name', 'auto', 'Inference backend; auto tries tensorrt, onnxruntime, torch in that '
                  'order and reports why it skipped any (with a GPU but no TensorRT it times onnxruntime '
                  'against torch on CUDA and keeps the faster).', choices=tuple(available_backends()), read_only=True),
        # one parameter per backend option, derived from the backends' options dataclasses (defaults,
        # descriptions, ranges have one owner: the backend); TensorRT's keep Isaac ROS's names
        *(ParamSpec(f'backend.{p.name}', p.default, p.description, range=p.range, choices=p.choices,
                    read_only=True) for p in backend_parameters()),
        ParamSpec('window.hop_s', _W.hop_s, 'Seconds between window starts; starts lie on multiples of '
                  'hop_s in sensor time. Window length and timesteps come from the model card.',
                  range=(0.01, 60.0)),
        ParamSpec('window.max_frame_age_s', _W.max_frame_age_s, 'Oldest a camera frame may be at a '
                  'timestep centre; a window without such frames is classified from audio alone (flag '
                  'missing_image).', range=(0.001, 60.0)),
        ParamSpec('window.gap_policy', _W.gap_policy, 'Audio lost inside a window: zero_fill (if at most '
                  'max_gap_s is missing, flagged audio_gap) or drop: the window\'s audio is not used (it is '
                  'classified from the camera, flagged missing_audio; dropped for an audio-only card).',
                  choices=GAP_POLICIES),
        ParamSpec('window.max_gap_s', _W.max_gap_s, 'Most missing audio a zero-filled window may have '
                  '(more: treated as under gap_policy drop).',
                  range=(0.0, 60.0)),
        ParamSpec('window.gap_tolerance_s', _W.gap_tolerance_s, 'Audio chunk stamp jitter still treated as '
                  'continuous audio (larger offsets are gaps or overlaps).', range=(0.0, 1.0)),
        ParamSpec('window.max_buffer_s', _W.max_buffer_s, 'History kept per stream; also the longest a window '
                  'waits for the slower modality.', range=(0.5, 600.0)),
        ParamSpec('window.modality_timeout_s', _W.modality_timeout_s, 'Stall threshold: a sense whose data is '
                  'this far behind the other stream (past a window\'s end) is given up for that window, which '
                  'is classified from the other sense and flagged missing_image / missing_audio. Must be <= '
                  'max_buffer_s - window length - one timestep for a two-sense card.', range=(0.01, 600.0)),
        ParamSpec('inference.accept_threshold', ACCEPT_THRESHOLD_FROM_CARD, 'Calibrated probability the top '
                  'class needs to be reported as an event; below it (or when the top class is the card\'s '
                  'no-event class) the window is published as label none with flag no_event. Negative: the '
                  'model card\'s accept_threshold (0 when the card has none).', range=(-1.0, 1.0)),
        ParamSpec('inference.queue_size', 1, 'Windows waiting for inference. 1: newest wins (lowest latency); '
                  'more: oldest dropped when full. Drops count as dropped_busy.', range=(1, 10000)),
        ParamSpec('qos.sensor.reliability', 'auto', 'Reliability of the image and audio subscriptions: '
                  'auto follows each topic\'s publishers (reliable when every publisher is reliable, best '
                  'effort otherwise or while there is none yet; re-checked when publishers appear), as '
                  'image_pipeline does; best_effort = sensor data QoS; reliable for lossless replay.',
                  choices=RELIABILITIES, read_only=True),
        ParamSpec('qos.sensor.depth', 10, 'History depth of the image and audio subscriptions.',
                  range=(1, 100000), read_only=True),
        ParamSpec('input.compressed', False, 'Subscribe to image/compressed (sensor_msgs/CompressedImage) '
                  'instead of image (sensor_msgs/Image).', read_only=True),
        ParamSpec('input.max_image_pixels', DEFAULT_MAX_IMAGE_PIXELS, 'Largest image accepted, in pixels '
                  '(width x height; default 4K UHD). A CompressedImage whose header declares more is dropped '
                  'before decoding (image_size), so a tiny hostile PNG cannot allocate gigabytes.',
                  range=(1, MAX_IMAGE_SIDE * MAX_IMAGE_SIDE), read_only=True),
        ParamSpec('output.vision_msgs', False, 'Also publish vision_msgs/Classification on vision_classification '
                  'and vision_msgs/LabelInfo (transient local) on label_info; needs vision_msgs.', read_only=True),
        ParamSpec('output.hri_expression', False, 'Also publish hri_msgs/Expression (REP-155) on expression; '
                  'the model\'s labels must be emotions; needs hri_msgs.', read_only=True),
        ParamSpec(PERIOD_PARAM, DEFAULT_PERIOD_S, 'Seconds between /diagnostics reports (diagnostic_updater\'s '
                  'parameter).', range=(0.1, 3600.0)),
        ParamSpec(USE_FQN_PARAM, False, 'Name the /diagnostics status after the fully qualified node name '
                  '(/ns/av_classifier: pipeline) instead of the plain one (av_classifier: pipeline), as '
                  'diagnostic_updater does.'),
        ParamSpec('energy.enabled', False, 'Report firing rates and an energy estimate per window in '
                  '/diagnostics (torch backend only, when av_snn_ros.models.energy provides EnergyMeter).'),
        ParamSpec('autostart', False, 'Configure and activate on start-up (for standalone use; leave false '
                  'when launch or a lifecycle manager drives the transitions).'),
    )


@dataclass(frozen=True)
class BackendSettings:
    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeSettings:
    """Validated parameters of one configure."""

    model_card: str
    backend: BackendSettings
    window: WindowParams
    queue_size: int
    accept_threshold: float | None     # None: the model card's
    reliability: str
    depth: int
    compressed: bool
    max_image_pixels: int
    diagnostics_period_s: float
    diagnostics_use_fqn: bool
    vision_output: bool
    expression_output: bool
    energy_enabled: bool


def _check(spec: ParamSpec, value: Any) -> Any:
    """Type/range/choice check of one value; returns it normalised (int -> float for float params)."""
    expected = type(spec.default)
    if spec.is_float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
        raise ValueError(f'{spec.name}: expected {expected.__name__}, got {type(value).__name__} {value!r}')
    if spec.is_float and not math.isfinite(value):
        raise ValueError(f'{spec.name}: must be finite, got {value}')
    if spec.range is not None and not spec.range[0] <= value <= spec.range[1]:
        raise ValueError(f'{spec.name}: {value} is outside [{spec.range[0]}, {spec.range[1]}]')
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(f'{spec.name}: {value!r} is not one of {", ".join(spec.choices)}')
    return value


def descriptor(spec: ParamSpec):
    """The ``ParameterDescriptor`` advertised for ``spec`` (ranges, choices, read-only)."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
    d = ParameterDescriptor(name=spec.name, description=spec.description, read_only=spec.read_only)
    if spec.choices:
        d.additional_constraints = 'one of: ' + ', '.join(spec.choices)
    if spec.range is not None:
        if spec.is_float:
            d.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]),
                                                         to_value=float(spec.range[1]), step=0.0)]
        else:
            d.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]), step=0)]
    if spec.is_float:
        # accept `hop_s: 1` from YAML (an integer) instead of failing at start-up; checked at configure
        d.dynamic_typing = True
    return d


def declare_parameters_from(node, specs: tuple[ParamSpec, ...], check_values: bool = True) -> list[str]:
    """Declare ``specs`` on ``node``; return the problems found (empty when all is well).

    An override that rclpy rejects (wrong type, outside the advertised range) is replaced by the default
    and reported here, so the caller can fail with a clear message instead of the constructor raising.
    Overrides naming no declared parameter (a misspelt key in a params file) are reported too.
    """
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
    errors = []
    for spec in specs:
        try:
            node.declare_parameter(spec.name, spec.default, descriptor(spec))
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            errors.append(f'{spec.name}: {exc}')
            node.declare_parameter(spec.name, spec.default, descriptor(spec), ignore_override=True)
    overrides = getattr(node, '_parameter_overrides', {}) or {}
    unknown = sorted(name for name in overrides if not node.has_parameter(name))
    if unknown:
        valid = ', '.join(s.name for s in specs)
        errors.append(f'unknown parameter(s) {", ".join(unknown)} for node {node.get_name()}; valid: {valid}')
    for spec in specs if check_values else ():
        if not any(e.startswith(spec.name + ':') for e in errors):
            try:
                _check(spec, node.get_parameter(spec.name).value)
            except ValueError as exc:
                errors.append(str(exc))
    return errors


def reject_invalid_updates(node, specs: tuple[ParamSpec, ...]) -> None:
    """Refuse ``set_parameters`` calls (``ros2 param set``) whose values fail their spec, with the reason,
    instead of accepting them and failing only at the next configure."""
    from rcl_interfaces.msg import SetParametersResult
    by_name = {s.name: s for s in specs}

    def check(parameters) -> SetParametersResult:
        for p in parameters:
            spec = by_name.get(p.name)
            if spec is None:
                continue
            try:
                _check(spec, p.value)
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(check)


def declare_parameters(node) -> list[str]:
    """Declare the classifier's parameters (see :func:`declare_parameters_from`).

    Values are checked at every configure instead (they may be changed in between); rejected overrides
    and unknown names are start-up errors that stay until the node is restarted with fixed parameters.
    """
    specs = param_specs()
    errors = declare_parameters_from(node, specs, check_values=False)
    reject_invalid_updates(node, specs)
    return errors


def read_settings(values: dict[str, Any]) -> NodeSettings:
    """Validate parameter values (name -> value) into :class:`NodeSettings`; ``ValueError`` lists every
    problem, one per line."""
    specs = {s.name: s for s in param_specs()}
    checked: dict[str, Any] = {}
    problems = []
    for name, spec in specs.items():
        try:
            checked[name] = _check(spec, values.get(name, spec.default))
        except ValueError as exc:
            problems.append(str(exc))
    if checked.get('backend.native_kernels') and checked.get('backend.name', 'torch') != 'torch':
        # the kernels live in the torch backend; under auto they would apply only if every faster
        # backend failed, which is not what setting them asks for
        problems.append(f'backend.native_kernels: needs backend.name torch, got {checked["backend.name"]!r}')
    if problems:
        raise ValueError('invalid parameters:\n  ' + '\n  '.join(problems))
    if not checked['model.card']:
        raise ValueError('model.card is empty and no shipped default model was found; '
                         'pass -p model.card:=/path/to/card.yaml')
    options = options_from_parameters({name[len('backend.'):]: value for name, value in checked.items()
                                       if name.startswith('backend.') and name != 'backend.name'})
    window = WindowParams(hop_s=checked['window.hop_s'], max_frame_age_s=checked['window.max_frame_age_s'],
                          gap_policy=checked['window.gap_policy'], max_gap_s=checked['window.max_gap_s'],
                          gap_tolerance_s=checked['window.gap_tolerance_s'],
                          max_buffer_s=checked['window.max_buffer_s'],
                          modality_timeout_s=checked['window.modality_timeout_s'])
    accept = checked['inference.accept_threshold']
    return NodeSettings(
        model_card=checked['model.card'], backend=BackendSettings(checked['backend.name'], options),
        window=window, queue_size=checked['inference.queue_size'],
        accept_threshold=None if accept < 0 else accept,
        reliability=checked['qos.sensor.reliability'], depth=checked['qos.sensor.depth'],
        compressed=checked['input.compressed'], max_image_pixels=checked['input.max_image_pixels'],
        diagnostics_period_s=checked[PERIOD_PARAM],
        diagnostics_use_fqn=checked[USE_FQN_PARAM], vision_output=checked['output.vision_msgs'],
        expression_output=checked['output.hri_expression'],
        energy_enabled=checked['energy.enabled'])


def node_values(node) -> dict[str, Any]:
    """Current values of every declared spec on ``node``."""
    return {s.name: node.get_parameter(s.name).value for s in param_specs()}
