"""``av_classifier``: the audio-visual SNN classifier as a ROS 2 lifecycle node.

Topics (relative; remap them):
    ``image`` (sensor_msgs/Image) or ``image/compressed`` (sensor_msgs/CompressedImage), ``audio``
    (av_snn_msgs/AudioChunk) in; ``classification`` (av_snn_msgs/Classification) and ``/diagnostics``
    (diagnostic_msgs/DiagnosticArray) out.

Threads: one single-threaded executor runs the image and audio callbacks (they only decode, push into
the windower and hand complete windows to the inference worker), the diagnostics timer and the
lifecycle/parameter services; the inference worker is its own thread (newest wins), so messages keep
arriving while a window is being classified. Not rclpy's MultiThreadedExecutor: its spin loop polls
while a handed-off callback has not yet taken its message, which kept one of a 2-core robot's cores
busy (99 % CPU at 50 + 30 messages/s) and starved the callbacks (see :func:`make_executor`).

Lifecycle: ``__init__`` only declares parameters. ``configure`` validates them, loads the model card and
backend (with warm-up) and builds the windower; ``activate`` subscribes and starts the worker and the
diagnostics; ``deactivate`` stops them and forgets buffered data; ``cleanup`` releases the backend.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Any

import numpy as np
import rclpy
from rclpy.executors import Executor, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from ..backends.base import BackendChoice, BackendUnavailable, create_backend
from ..inference_worker import InferenceWorker
from ..model_card import ModelCard, ModelFileError
from ..prediction import Prediction, Predictor
from ..runtime_stats import (LOW_RECEIPT_FRACTION, Counters, LatencyTracker, RateMeter, ReceiptMonitor,
                             ThrottledWarnings)
from ..windowing import FLAG_MISSING_AUDIO, FLAG_MISSING_IMAGE, AudioVisualWindower, Window
from . import conversions, diagnostic_conventions, params, process, qos
from .standard_outputs import StandardOutputs

NODE_NAME = 'av_classifier'
IMAGE_TOPIC = 'image'
COMPRESSED_IMAGE_TOPIC = 'image/compressed'
AUDIO_TOPIC = 'audio'
CLASSIFICATION_TOPIC = 'classification'
DIAGNOSTICS_TOPIC = '/diagnostics'
#: warm-up passes at configure (pays lazy allocation / kernel selection before the first window)
WARMUP_ITERATIONS = 2
#: seconds without any window classified (while inputs arrive) before diagnostics warn
STALL_WARN_S = 5.0
#: diagnostics level bytes (diagnostic_msgs/DiagnosticStatus)
_OK, _WARN, _ERROR = b'\x00', b'\x01', b'\x02'


class AvClassifierNode(LifecycleNode):
    """Lifecycle node: camera + microphone windows -> backend -> Classification messages."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._param_errors = params.declare_parameters(self)
        self._lock = threading.Lock()            # windower + frame id (intake vs diagnostics)
        self.counters = Counters()               # drops by reason, published windows, ...
        self._warnings = ThrottledWarnings()
        self.inference_latency = LatencyTracker()
        self.stamp_latency = LatencyTracker()
        self.rates = {'image': RateMeter(), 'audio': RateMeter(), 'classification': RateMeter()}
        self.receipt = {'image': ReceiptMonitor(), 'audio': ReceiptMonitor()}
        self.settings: params.NodeSettings | None = None
        self.card: ModelCard | None = None
        self.choice: BackendChoice | None = None
        self._predictor: Predictor | None = None
        self._windower: AudioVisualWindower | None = None
        self._worker: InferenceWorker | None = None
        self._energy = None
        self._sensor_subs: dict[str, tuple[Any, str]] = {}   # kind -> (subscription, reliability)
        self._timer = None
        self._pub_classification = None
        self._pub_diagnostics = None
        self._outputs: StandardOutputs | None = None   # optional vision_msgs / hri_msgs outputs
        self._frame_id = ''
        self._last_classified = time.monotonic()
        self._last_energy: dict[str, float] | None = None
        self._reported_errors = 0              # inference errors already reported in /diagnostics
        self._degraded_seen: dict[str, int] = {}   # windows flagged missing_* already reported

    # --------------------------------------------------------------------------------------- lifecycle

    @property
    def autostart(self) -> bool:
        value = self.get_parameter('autostart').value
        return value is True

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        log = self.get_logger()
        try:
            if self._param_errors:
                raise ValueError('invalid parameters:\n  ' + '\n  '.join(self._param_errors))
            settings = params.read_settings(params.node_values(self))
            card = ModelCard.load(settings.model_card)
            settings.window.validate(card.preprocessing, card.modalities)
            choice = create_backend(settings.backend.name, card, **settings.backend.options)
            try:
                self._warm_up(choice, card)
                windower = AudioVisualWindower.from_params(card.preprocessing, settings.window, card.modalities)
                outputs = StandardOutputs.plan(card.labels, settings.vision_output, settings.expression_output)
            except Exception:
                choice.backend.close()
                raise
        except (ValueError, ModelFileError, BackendUnavailable, FileNotFoundError) as exc:
            log.error(f'configure failed: {exc}')
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # noqa: BLE001 - report anything else clearly instead of rclpy's silent ERROR
            log.error(f'configure failed with an unexpected {type(exc).__name__}: {exc}')
            return TransitionCallbackReturn.FAILURE
        self.settings, self.card, self.choice = settings, card, choice
        self._predictor = Predictor(choice.backend, card, settings.accept_threshold)
        self._energy = self._make_energy_meter() if settings.energy_enabled else None
        with self._lock:
            self._windower = windower
        self._pub_classification = self.create_lifecycle_publisher(
            _msg('Classification'), CLASSIFICATION_TOPIC, qos.output_qos())
        self._pub_diagnostics = self.create_lifecycle_publisher(
            _diag('DiagnosticArray'), DIAGNOSTICS_TOPIC, qos.diagnostics_qos())
        self._outputs = outputs
        outputs.create(self, qos.output_qos())
        for skipped, reason in choice.skipped.items():
            log.warning(f'backend {skipped} not used: {reason}')
        pre = card.preprocessing
        log.info(f'configured: model {card.model}/{card.name} ({len(card.labels)} labels), backend '
                 f'{choice.backend.name}, window {pre.window_s:g} s x {pre.timesteps} steps every '
                 f'{settings.window.hop_s:g} s, audio {pre.sample_rate} Hz')
        return TransitionCallbackReturn.SUCCESS

    def _warm_up(self, choice: BackendChoice, card: ModelCard) -> None:
        from ..backends.shapes import expected_shapes
        a_shape, v_shape = expected_shapes(card.preprocessing, 1)
        choice.backend.warmup(np.zeros(a_shape, np.float32), np.zeros(v_shape, np.float32),
                              iterations=WARMUP_ITERATIONS)

    def _make_energy_meter(self):
        """The model zoo's energy meter for the torch backend, or None (logged once) when unavailable."""
        if self.choice is None or self.choice.backend.name != 'torch':
            self.get_logger().warning('energy.enabled needs backend torch; energy is not reported')
            return None
        try:
            from ..models import energy
        except ImportError:
            self.get_logger().warning('energy.enabled: av_snn_ros.models.energy is not available; '
                                      'energy is not reported')
            return None
        factory = getattr(energy, 'EnergyMeter', None)
        if factory is None:
            self.get_logger().warning('energy.enabled: av_snn_ros.models.energy has no EnergyMeter')
            return None
        try:
            return factory(self.choice.backend.model)
        except Exception as exc:  # noqa: BLE001 - optional feature, never fatal
            self.get_logger().warning(f'energy meter unavailable: {exc}')
            return None

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        settings = self.settings
        self._worker = InferenceWorker(self._predict, self._publish, self._on_worker_error,
                                       capacity=settings.queue_size, name='av_classifier_inference',
                                       counters=self.counters)
        self._worker.start()
        # only the senses the model takes: an audio-only card has no camera subscription at all
        for kind in self._input_streams():
            self._subscribe(kind)
        self._timer = self.create_timer(settings.diagnostics_period_s,
                                        self._guarded('diagnostics', self._on_timer, counts_drop=False))
        for meter in (*self.rates.values(), *self.receipt.values()):
            meter.reset()
        self._last_classified = time.monotonic()
        topics = ' and '.join(f'{sub.topic_name} ({rel})' for sub, rel in self._sensor_subs.values())
        self.get_logger().info(f'active: listening on {topics}, publishing {self._pub_classification.topic_name}')
        return super().on_activate(state)

    def _sensor_topic(self, kind: str) -> tuple[Any, str, Any]:
        """(message type, relative topic, callback) of the image or audio input."""
        if kind == 'audio':
            return _msg('AudioChunk'), AUDIO_TOPIC, self._on_audio
        if self.settings.compressed:
            return _sensor('CompressedImage'), COMPRESSED_IMAGE_TOPIC, self._on_compressed_image
        return _sensor('Image'), IMAGE_TOPIC, self._on_image

    def _wanted_reliability(self, kind: str) -> str:
        """The configured reliability, or under ``auto`` the one the topic's publishers offer (kept as it
        is while there are none)."""
        setting = self.settings.reliability
        if setting != 'auto':
            return setting
        _, topic, _ = self._sensor_topic(kind)
        offered = qos.publishers_reliability(
            [info.qos_profile for info in self.get_publishers_info_by_topic(self.resolve_topic_name(topic))])
        if offered is None:
            current = self._sensor_subs.get(kind)
            return current[1] if current is not None else qos.NO_PUBLISHER_RELIABILITY
        return offered

    def _subscribe(self, kind: str) -> None:
        """(Re)create the subscription of ``kind`` with the reliability :meth:`_wanted_reliability` gives."""
        reliability = self._wanted_reliability(kind)
        old = self._sensor_subs.pop(kind, None)
        if old is not None:
            self.destroy_subscription(old[0])
        msg_type, topic, callback = self._sensor_topic(kind)
        sub = self.create_subscription(msg_type, topic, self._guarded(kind, callback),
                                       qos.sensor_qos(reliability, self.settings.depth))
        self._sensor_subs[kind] = (sub, reliability)
        if old is not None:
            self.get_logger().info(f'{sub.topic_name}: publishers changed, subscription now {reliability}')

    def _follow_publishers(self) -> None:
        """``qos.sensor.reliability: auto``: re-subscribe when the publishers' reliability changed."""
        if self.settings is None or self.settings.reliability != 'auto':
            return
        for kind in list(self._sensor_subs):
            if self._wanted_reliability(kind) != self._sensor_subs[kind][1]:
                self._subscribe(kind)

    def _stop_activity(self) -> None:
        for sub, _ in self._sensor_subs.values():
            self.destroy_subscription(sub)
        self._sensor_subs = {}
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        with self._lock:
            if self._windower is not None:
                self._windower.reset()       # data from before a pause must not join data after it

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_activity()
        self.get_logger().info('inactive: subscriptions closed, buffers cleared')
        return super().on_deactivate(state)

    def _release(self) -> None:
        self._stop_activity()
        for pub in (self._pub_classification, self._pub_diagnostics):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self._pub_classification = self._pub_diagnostics = None
        if self._outputs is not None:
            self._outputs.destroy(self)
            self._outputs = None
        if self._energy is not None and hasattr(self._energy, 'close'):
            self._energy.close()              # removes its forward hooks from the model
        if self.choice is not None:
            self.choice.backend.close()
        self.choice = self.card = self.settings = self._predictor = self._energy = None
        with self._lock:
            self._windower = None

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info('unconfigured: backend released')
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f'error in state {state.label}: releasing everything')
        self._release()
        return TransitionCallbackReturn.SUCCESS

    # --------------------------------------------------------------------------------------- intake

    def _drop(self, reason: str, text: str) -> None:
        """Count a dropped message under ``reason``; warn the first time and then at most once a period."""
        self.counters.inc(f'drop.{reason}')
        count = self._warnings.check(reason)
        if count is not None:
            extra = f' ({count} since the last warning)' if count > 1 else ''
            self.get_logger().warning(f'dropping input [{reason}]{extra}: {text}')

    def _guarded(self, name: str, callback, counts_drop: bool = True):
        """``callback`` behind a guard: an exception is counted and logged (throttled), never reaches the
        executor, whose spin would otherwise end and take the node down with it."""
        def run(*args) -> None:
            try:
                callback(*args)
            except Exception as exc:  # noqa: BLE001 - the guard's whole point
                text = f'{type(exc).__name__} in the {name} callback: {exc}'
                if counts_drop:
                    self._drop(f'{name}_callback_error', text)
                else:
                    self.counters.inc(f'error.{name}_callback')
                    if self._warnings.check(f'{name}_callback') is not None:
                        self.get_logger().error(text)
        return run

    def _push(self, kind: str, push) -> None:
        with self._lock:
            windower = self._windower
            if windower is None:
                return
            try:
                push(windower)
            except ValueError as exc:        # conversions already validated; this is a last guard
                self._drop(f'{kind}_invalid', str(exc))
                return
            windows = windower.pop_ready()
        worker = self._worker
        for window in windows:
            if worker is not None:
                try:
                    worker.submit(window)
                except RuntimeError:         # deactivating: the worker is closing
                    return

    def _on_image(self, msg) -> None:
        self.rates['image'].tick()
        try:
            stamp, frame = conversions.image_to_array(msg, self.settings.max_image_pixels)
        except conversions.MessageError as exc:
            self._drop(exc.reason, str(exc))
            return
        self.receipt['image'].add(stamp)
        self._frame_id = msg.header.frame_id
        self._push('image', lambda w: w.push_frame(stamp, frame))

    def _on_compressed_image(self, msg) -> None:
        self.rates['image'].tick()
        try:
            stamp, frame = conversions.compressed_image_to_array(msg, self.settings.max_image_pixels)
        except conversions.MessageError as exc:
            self._drop(exc.reason, str(exc))
            return
        self.receipt['image'].add(stamp)
        self._frame_id = msg.header.frame_id
        self._push('image', lambda w: w.push_frame(stamp, frame))

    def _on_audio(self, msg) -> None:
        self.rates['audio'].tick()
        try:
            stamp, samples, rate = conversions.audio_to_array(msg)
        except conversions.MessageError as exc:
            self._drop(exc.reason, str(exc))
            return
        self.receipt['audio'].add(stamp, samples.size / rate)
        self._push('audio', lambda w: w.push_audio(stamp, samples, rate))

    # --------------------------------------------------------------------------------------- inference

    def _predict(self, window: Window) -> Prediction:
        predictor = self._predictor
        if predictor is None:
            raise RuntimeError('not configured')
        meter = self._energy
        if meter is not None:
            # expected interface of av_snn_ros.models.energy.EnergyMeter(model): a context manager that
            # records one forward pass, and report() -> {name: number} (firing rate, synops, energy_j)
            with meter:
                prediction = predictor(window)
            self._last_energy = dict(meter.report())
        else:
            prediction = predictor(window)
        self.inference_latency.add(prediction.preprocess_s + prediction.inference_s)
        return prediction

    def _publish(self, window: Window, prediction: Prediction) -> None:
        pub = self._pub_classification
        if pub is None:
            return
        pub.publish(conversions.classification_msg(prediction, self._frame_id))
        outputs = self._outputs
        if outputs is not None:
            outputs.publish(prediction, self._frame_id)
        self.counters.inc('windows_classified')
        self.rates['classification'].tick()
        self._last_classified = time.monotonic()
        self.stamp_latency.add((self.get_clock().now().nanoseconds - window.end_ns) / 1e9)

    def _on_worker_error(self, window: Window, exc: Exception) -> None:
        self.counters.inc('drop.inference_error')
        count = self._warnings.check('inference_error')
        if count is not None:
            self.get_logger().error(f'inference failed for window ending {window.end_ns} ns '
                                    f'({type(exc).__name__}: {exc}); window dropped')

    # --------------------------------------------------------------------------------------- diagnostics

    def diagnostics_values(self) -> dict[str, str]:
        """Every counter and statistic reported in ``/diagnostics`` (strings, as KeyValue wants)."""
        values: dict[str, Any] = {}
        with self._lock:
            windower = self._windower
            window_counts = dict(windower.counters) if windower is not None else {}
            skew = windower.stream_skew_s() if windower is not None else None
            buffered = (windower.buffered_audio_s, windower.buffered_frames) if windower else (0.0, 0)
        counts = self.counters.snapshot()
        values['windows_formed'] = window_counts.get('windows_formed', 0)
        values['windows_classified'] = counts.get('windows_classified', 0)
        values['windows_dropped'] = window_counts.get('windows_dropped', 0) + counts.get('dropped_busy', 0) \
            + counts.get('drop.inference_error', 0)
        values['dropped_busy'] = counts.get('dropped_busy', 0)
        for key in ('missing_audio', 'missing_visual', 'audio_gap'):
            values[f'dropped_{key}'] = window_counts.get(key, 0)
        for key, n in sorted(window_counts.items()):
            if key not in ('windows_formed', 'windows_dropped', 'missing_audio', 'missing_visual', 'audio_gap'):
                values[f'input.{key}'] = n
        for key, n in sorted(counts.items()):
            if key.startswith('drop.'):
                values[key] = n
        values['messages_dropped'] = sum(n for k, n in counts.items()
                                         if k.startswith('drop.') and k != 'drop.inference_error')
        for name, meter in self.rates.items():
            values[f'rate.{name}_hz'] = f'{meter.rate_hz():.2f}'
        for name, monitor in self.receipt.items():
            fraction = monitor.fraction()
            if fraction is not None:      # share of what the publisher sent that arrived
                values[f'receipt.{name}'] = f'{fraction:.2f}'
        for kind, (_, reliability) in self._sensor_subs.items():
            values[f'qos.{kind}_reliability'] = reliability
        trackers = [('inference', self.inference_latency), ('stamp_to_publish', self.stamp_latency)]
        worker = self._worker
        if worker is not None:
            trackers.append(('queue_wait', worker.queue_wait))   # window complete -> inference starts
        for name, tracker in trackers:
            for q, v in tracker.percentiles().items():
                values[f'latency.{name}_{q}_s'] = f'{v:.4f}'
        values['buffered_audio_s'] = f'{buffered[0]:.2f}'
        values['buffered_frames'] = buffered[1]
        if skew is not None:
            values['stream_skew_s'] = f'{skew:.3f}'
        if self.choice is not None:
            values['backend'] = self.choice.backend.name
            values['backend_requested'] = self.choice.requested
            for name, reason in self.choice.skipped.items():
                values[f'backend_fallback.{name}'] = reason
            for key, v in self.choice.backend.info.items():
                if key != 'fallback_from':
                    values[f'backend.{key}'] = v
        if self.card is not None:
            values['model'] = f'{self.card.model}/{self.card.name}'
        energy = self._last_energy
        if energy:
            for key, v in energy.items():
                values[f'energy.{key}'] = v
        return {k: str(v) for k, v in values.items()}

    def _on_timer(self) -> None:
        self._follow_publishers()
        self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        pub = self._pub_diagnostics
        if pub is None:
            return
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
        values = self.diagnostics_values()
        level, message = self._health(values)
        name = diagnostic_conventions.status_name(self.get_name(), self.get_fully_qualified_name(),
                                                  diagnostic_conventions.PIPELINE_TASK,
                                                  self.settings is not None and self.settings.diagnostics_use_fqn)
        status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=values.get('model', ''),
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        pub.publish(array)

    def _health(self, values: dict[str, str]) -> tuple[bytes, str]:
        errors = int(values.get('drop.inference_error', 0))
        new_errors, self._reported_errors = errors - self._reported_errors, errors
        if new_errors > 0:
            return _ERROR, f'inference failed for {new_errors} window(s) since the last report (see the log)'
        degraded = self._new_degraded_windows(values)
        streams = self._input_streams()
        silent = [name for name in streams if float(values[f'rate.{name}_hz']) == 0]
        if silent and len(silent) == len(streams):
            return _WARN, f'no input: nothing received on {" or ".join(streams)}'
        problems = [f'no {name} input' for name in silent] + ([degraded] if degraded else [])
        low = [f'{name} {values[f"receipt.{name}"]}' for name in streams
               if float(values.get(f'receipt.{name}', 1.0)) < LOW_RECEIPT_FRACTION]
        if low:
            problems.append(f'receiving only part of what is published ({", ".join(low)}): use '
                            'qos.sensor.reliability auto or reliable, or compressed images')
        if problems:
            return _WARN, '; '.join(problems)
        if time.monotonic() - self._last_classified > STALL_WARN_S:
            return _WARN, 'inputs arrive but no window was classified recently (see dropped_* counters)'
        return _OK, f'classifying ({values["rate.classification_hz"]} windows/s, backend {values.get("backend")})'

    def _input_streams(self) -> list[str]:
        """Rate names of the streams the card's model takes (``image``, ``audio``)."""
        modalities = self.card.modalities if self.card is not None else ('audio', 'visual')
        return [name for name, sense in (('image', 'visual'), ('audio', 'audio')) if sense in modalities]

    def _new_degraded_windows(self, values: dict[str, str]) -> str:
        """WARN text naming the stream windows were classified without since the last report ('' if none)."""
        seen = self._degraded_seen
        parts = []
        for flag, stream in ((FLAG_MISSING_IMAGE, 'image'), (FLAG_MISSING_AUDIO, 'audio')):
            count = int(values.get(f'input.windows_flagged_{flag}', 0))
            new, seen[flag] = count - seen.get(flag, 0), count
            if new > 0:
                parts.append(f'{new} window(s) classified without {stream} ({stream} stream stalled or stopped, '
                             f'flag {flag})')
        return '; '.join(parts)


def _msg(name: str):
    from av_snn_msgs import msg
    return getattr(msg, name)


def _sensor(name: str):
    from sensor_msgs import msg
    return getattr(msg, name)


def _diag(name: str):
    from diagnostic_msgs import msg
    return getattr(msg, name)


def start(node: AvClassifierNode) -> bool:
    """Configure and activate ``node`` (its ``autostart``); False (logged by the node) on failure."""
    if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        return False
    return node.trigger_activate() == TransitionCallbackReturn.SUCCESS


def shutdown_node(node: AvClassifierNode) -> None:
    """Leave the lifecycle cleanly (deactivate/cleanup via the shutdown transition), then destroy."""
    state = node._state_machine.current_state[1]
    if node.context.ok() and state in ('unconfigured', 'inactive', 'active'):
        node.trigger_shutdown()              # runs on_shutdown, which releases everything
    else:
        # Ctrl-C: the context is shutting down and rcl moves the state machine itself; a transition
        # from here would race it, so only release what the node holds
        node._release()
    node.destroy_node()


def make_executor(context=None) -> Executor:
    """The executor the node graph spins on: single-threaded.

    The callbacks are short (decode + windowing; inference has its own thread), so one thread keeps
    up. rclpy's MultiThreadedExecutor was measured at 99 % of a core in its own spin loop (it re-polls
    the wait set while a submitted callback has not yet taken its message), which cost 28 of 59 windows
    at real time with best-effort sensors on 2 cores (docs/performance.md).
    """
    return SingleThreadedExecutor(context=context)


def main(args: list[str] | None = None) -> int:
    """``av_classifier_node [--ros-args ...]``: spin the node; configure+activate itself if ``autostart``.

    SIGINT/SIGTERM end the spin; the node then leaves its lifecycle cleanly (see :mod:`.process`).
    """
    stop = process.init(args)
    node = AvClassifierNode()
    executor = make_executor()
    executor.add_node(node)
    code = 0
    try:
        if node.autostart and not start(node):
            node.get_logger().error('autostart failed; exiting (see the error above)')
            code = 1
        else:
            process.spin(executor, stop)
    finally:
        shutdown_node(node)
        executor.shutdown()
        rclpy.try_shutdown()
        stop.finish()
    return code


if __name__ == '__main__':
    sys.exit(main())
