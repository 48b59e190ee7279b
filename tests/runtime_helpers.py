"""Shared helpers of the runtime tests: a small model card and real audio-visual data laid out as a robot
would deliver it (camera frames at a fixed rate, 20 ms audio chunks, consecutive 1 s utterances)."""
from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from av_snn_ros.preprocessing import PreprocessConfig, preprocess_window

LABELS = [str(d) for d in range(10)]
CARD_MODEL = 'misnet_tiny'
NS_PER_S = 1_000_000_000
REPO = Path(__file__).resolve().parent.parent


def source_env(repo: Path = REPO) -> dict[str, str]:
    """Environment of a child process that runs this checkout's source (not the installed package).

    Unbuffered output and faulthandler: a crash of the child (e.g. at Ctrl-C) leaves its Python stacks
    in the output the test prints.
    """
    return dict(os.environ, PYTHONUNBUFFERED='1', PYTHONFAULTHANDLER='1',
                PYTHONPATH=os.pathsep.join([str(repo), str(repo / 'training'), os.environ.get('PYTHONPATH', '')]))


@contextlib.contextmanager
def child_process(cmd: list[str], log_path: Path):
    """``cmd`` in its own process (output to ``log_path``); yields ``(proc, output)`` where ``output``
    is a list that holds the child's whole output once the block ends. The child is killed if it is
    still running then, and its output is printed (pytest shows it when the test fails)."""
    output: list[str] = []
    with open(log_path, 'w+') as log:
        proc = subprocess.Popen(cmd, env=source_env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            yield proc, output
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.seek(0)
            output.append(log.read())
            print(f'--- {" ".join(cmd[2:4])} output ---\n{output[0]}')


def calibrated_on_real_windows(name: str, data_root: Path, batch: int):
    """A fresh registry model with BN statistics from ``batch`` real windows (so spikes reach the head),
    and those windows as ``(model, audio, visual)`` tensors."""
    import torch

    from av_snn_ros.tools.export import preprocess_config_for, real_window
    from av_snn_ros.models import calibrate_batchnorm, create_model
    torch.manual_seed(0)
    model = create_model(name)
    audio, visual = (torch.from_numpy(x) for x in real_window(preprocess_config_for(model), data_root, batch=batch))
    calibrate_batchnorm(model, [(audio, visual)])
    return model, audio, visual


def make_card(tmp_path_factory=None) -> Path:
    """The shipped default model's card, verified (trained: its predictions vary from sample to sample,
    which makes label comparisons meaningful). A missing or corrupt shipped model fails the calling test
    (skips it with ``AV_SNN_ALLOW_MISSING_DATA=1``); there is no silent fallback to an untrained card.
    Tests that want an untrained card ask for :func:`fresh_card` by name."""
    from prerequisites import require
    return require('model')


def fresh_card(tmp_path_factory) -> Path:
    """An untrained ``misnet_tiny`` card (weights + ONNX), written once per test session."""
    folder = tmp_path_factory.getbasetemp() / f'{CARD_MODEL}_card'
    card = folder / 'card.yaml'
    if not card.is_file():
        import torch

        from av_snn_ros.tools.export import preprocess_config_for, write_model_card
        from av_snn_ros.models.registry import create_model
        torch.manual_seed(0)
        model = create_model(CARD_MODEL, num_classes=len(LABELS))
        pre = preprocess_config_for(model)
        write_model_card(CARD_MODEL, folder, LABELS, pre, state_dict=_bn_calibrated(model, pre))
    return card


AUDIO_ONLY_MODEL = 'audio_tiny'


def card_variant(card_path: Path, folder: Path, **keys) -> Path:
    """A copy of the card at ``card_path`` (its files copied into ``folder``) with ``keys`` set or, given
    as None, removed in card.yaml: the perception-contract keys (``modalities``, ``no_event_label``, ...)
    and relabelled ``labels`` without retraining. The artefacts are unchanged, so their hashes still hold."""
    import shutil

    import yaml
    card_path = Path(card_path)
    src = card_path.parent if card_path.is_file() else card_path
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name != 'card.yaml':
            shutil.copy2(f, folder / f.name)
    data = yaml.safe_load((src / 'card.yaml').read_text())
    for key, value in keys.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    out = folder / 'card.yaml'
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def audio_only_card(tmp_path_factory) -> Path:
    """An untrained audio-only card (``audio_tiny``: weights + ONNX, BatchNorm calibrated on real windows,
    ``modalities: [audio]``), written once per test session."""
    folder = tmp_path_factory.getbasetemp() / f'{AUDIO_ONLY_MODEL}_card'
    card = folder / 'card.yaml'
    if not card.is_file():
        import torch

        from av_snn_ros.export import preprocess_config_for, write_model_card
        from av_snn_ros.models.registry import create_model
        torch.manual_seed(0)
        model = create_model(AUDIO_ONLY_MODEL, num_classes=len(LABELS))
        pre = preprocess_config_for(model)
        written = write_model_card(AUDIO_ONLY_MODEL, folder / 'plain', LABELS, pre,
                                   state_dict=_bn_calibrated(model, pre))
        card_variant(written, folder, modalities=['audio'])
    return card


def _bn_calibrated(model, cfg: PreprocessConfig, windows: int = 10) -> dict:
    """Fresh weights with BatchNorm statistics measured on real training windows (the model zoo's
    ``calibrate_batchnorm``): untrained statistics leave every LIF layer silent, so all outputs would
    equal the biases; calibrated ones make the untrained model's outputs depend on its input."""
    import torch

    from av_snn_ros.models import calibrate_batchnorm
    from av_snn_training.data.av_digits import AVDigits
    from prerequisites import require
    root = require('data')
    ds = AVDigits(root, 'train', cfg=cfg, num=windows)
    audio = torch.stack([ds[i][0] for i in range(windows)], dim=1)      # (T, B, 1, Ha, Wa)
    visual = torch.stack([ds[i][1] for i in range(windows)], dim=1)     # (T, B, C, Hv, Wv)
    calibrate_batchnorm(model, [(audio, visual)])
    return model.state_dict()


def dataset(cfg: PreprocessConfig, data_root: Path, num: int):
    from av_snn_training.data.av_digits import AVDigits
    return AVDigits(data_root, 'test', cfg=cfg, num=num)


def real_batch(cfg: PreprocessConfig, data_root: Path, num: int):
    """``num`` real windows preprocessed by the shared path: audio (T,B,...), visual (T,B,...), labels."""
    ds = dataset(cfg, data_root, num)
    audios, visuals, labels = [], [], []
    for i in range(num):
        raw = ds.raw(i)
        a, v = preprocess_window(raw.audio, [raw.image] * cfg.timesteps, cfg)
        audios.append(a)
        visuals.append(v)
        labels.append(raw.label)
    return np.stack(audios, axis=1), np.stack(visuals, axis=1), labels


@dataclass
class Recording:
    """Consecutive 1-window segments of real samples, on the hop grid from ``t0_ns``."""

    t0_ns: int
    audio: np.ndarray             # all segments' audio, back to back, at cfg.sample_rate
    images: list[np.ndarray]      # one camera image per segment
    labels: list[int]
    window_ns: int

    def segment_start(self, i: int) -> int:
        return self.t0_ns + i * self.window_ns


def recording(cfg: PreprocessConfig, data_root: Path, num: int, t0_s: int = 1000,
              indices: list[int] | None = None) -> Recording:
    """``num`` consecutive test-split samples (or the samples at ``indices``) back to back from ``t0_s``."""
    indices = list(range(num)) if indices is None else list(indices)
    ds = dataset(cfg, data_root, max(indices) + 1)
    raws = [ds.raw(i) for i in indices]
    return Recording(t0_ns=t0_s * NS_PER_S, audio=np.concatenate([r.audio for r in raws]),
                     images=[r.image for r in raws], labels=[r.label for r in raws],
                     window_ns=int(round(cfg.window_s * NS_PER_S)))


def robot_stream(rec: Recording, cfg: PreprocessConfig, fps: int = 20, chunk_s: float = 0.02):
    """Events ``(stamp_ns, 'audio', float32 chunk)`` / ``(stamp_ns, 'image', uint8 frame)`` in stamp order.

    The camera shows segment ``i``'s image during segment ``i``; audio comes in ``chunk_s`` chunks stamped
    with their first sample's time. Both start at ``rec.t0_ns``.
    """
    sr = cfg.sample_rate
    chunk = int(round(chunk_s * sr))
    events = []
    for i in range(0, len(rec.audio) - chunk + 1, chunk):
        events.append((rec.t0_ns + i * NS_PER_S // sr, 'audio', rec.audio[i:i + chunk]))
    n_segments = len(rec.images)
    total_ns = n_segments * rec.window_ns
    for j in range(int(total_ns * fps // NS_PER_S)):
        offset = j * NS_PER_S // fps
        events.append((rec.t0_ns + offset, 'image', rec.images[min(offset // rec.window_ns, n_segments - 1)]))
    events.sort(key=lambda e: (e[0], e[1]))
    return events


def offline_heads(card, rec: Recording) -> dict[str, np.ndarray]:
    """Softmax scores ``(segments, K)`` of the card's torch model on each segment for the fused output and
    each modality head (``'fused'``, ``'audio'``, ``'visual'``), all at the card's ``logit_scale``,
    preprocessed exactly as training and offline evaluation do (one static image repeated over T)."""
    from av_snn_ros.backends.torch_backend import TorchBackend
    from av_snn_ros.prediction import softmax
    cfg = card.preprocessing
    backend = TorchBackend(card, threads=1, device='cpu')
    n = cfg.window_samples
    out: dict[str, list] = {'fused': [], 'audio': [], 'visual': []}
    for i, image in enumerate(rec.images):
        a, v = preprocess_window(rec.audio[i * n:(i + 1) * n], [image] * cfg.timesteps, cfg)
        result = backend.infer(a[:, None], v[:, None])
        for key, logits in (('fused', result.logits), ('audio', result.audio_logits),
                            ('visual', result.visual_logits)):
            if logits is not None:
                out[key].append(softmax(logits[0] * card.logit_scale))
    return {k: np.stack(v) for k, v in out.items() if v}


def offline_scores(card, rec: Recording) -> np.ndarray:
    """Softmax scores ``(segments, K)`` of the card's fused output on each segment (see :func:`offline_heads`)."""
    return offline_heads(card, rec)['fused']


# ------------------------------------------------------------------------------------------- ROS graph

DEFAULT_TIMEOUT_S = 60.0


class Probe:
    """A plain node that publishes sensor data to, and records everything from, the classifier."""

    def __init__(self, context, namespace: str = '', reliable_sensors: bool = True, depth: int = 1000):
        from av_snn_msgs.msg import AudioChunk, Classification
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node
        from sensor_msgs.msg import CompressedImage, Image

        from av_snn_ros.ros import qos
        import threading
        self.node = Node('test_probe', namespace=namespace, context=context)
        ns = namespace.strip('/')
        # classifier() names a namespaced node's status by its fully qualified name (diagnostic_updater.use_fqn)
        self._diag_prefix = f'/{ns}/av_classifier:' if ns else 'av_classifier:'
        self.namespace = namespace
        sensor = qos.driver_qos(depth) if reliable_sensors else qos.sensor_qos('best_effort', depth)
        self.image_pub = self.node.create_publisher(Image, 'image', sensor)
        self.compressed_pub = self.node.create_publisher(CompressedImage, 'image/compressed', sensor)
        self.audio_pub = self.node.create_publisher(AudioChunk, 'audio', sensor)
        self.cond = threading.Condition()
        self.classifications: list = []
        self.diagnostics: list[dict[str, str]] = []
        self.cls_sub = self.node.create_subscription(Classification, 'classification', self._on_cls,
                                                     qos.output_qos())
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, qos.diagnostics_qos())

    def _on_cls(self, msg) -> None:
        with self.cond:
            self.classifications.append(msg)
            self.cond.notify_all()

    def _on_diag(self, msg) -> None:
        with self.cond:
            for status in msg.status:
                if status.name.startswith(self._diag_prefix):     # only our classifier's reports
                    values = {kv.key: kv.value for kv in status.values}
                    values['_level'] = status.level
                    values['_message'] = status.message
                    self.diagnostics.append(values)
            self.cond.notify_all()

    def wait_for(self, predicate, timeout: float = DEFAULT_TIMEOUT_S, what: str = 'condition') -> None:
        """Wait (condition variable, no fixed sleeps) until ``predicate(self)`` holds."""
        with self.cond:
            if not self.cond.wait_for(lambda: predicate(self), timeout=timeout):
                raise AssertionError(f'timed out after {timeout} s waiting for {what}')

    def wait_for_subscribers(self, timeout: float = DEFAULT_TIMEOUT_S, compressed: bool = False,
                             present: bool = True, image: bool = True) -> None:
        """Wait until the classifier's image and audio subscriptions exist (or, ``present=False``, are gone).
        ``image=False``: the audio subscription only (an audio-only card subscribes to no image topic)."""
        import time
        image_pub = self.compressed_pub if compressed else self.image_pub
        deadline = time.monotonic() + timeout

        def done() -> bool:
            counts = ((image_pub.get_subscription_count(),) if image else ()) + \
                (self.audio_pub.get_subscription_count(),)
            if not present:
                return not any(counts)
            # also wait for the classifier's output to be discovered: a volatile message published
            # before discovery completes would be lost
            return all(c >= 1 for c in counts) and self.cls_sub.get_publisher_count() >= 1

        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f'the classifier subscriptions did not {"appear" if present else "go away"}')
            with self.cond:
                self.cond.wait(0.05)     # graph changes have no callback in rclpy: poll with a timeout

    def latest_diagnostics(self) -> dict[str, str]:
        with self.cond:
            return dict(self.diagnostics[-1]) if self.diagnostics else {}

    def publish_events(self, events, image_encoding: str = 'rgb8', audio_encoding: str = 'F32LE',
                       sample_rate: int = 16000) -> None:
        from av_snn_ros.ros.conversions import array_to_audio, array_to_image
        for stamp, kind, payload in events:
            if kind == 'audio':
                self.audio_pub.publish(array_to_audio(payload, stamp, sample_rate, audio_encoding,
                                                      frame_id='mic'))
            elif kind == 'image':
                self.image_pub.publish(array_to_image(payload, stamp, image_encoding, frame_id='camera'))
            else:
                raise ValueError(kind)


class Spinner:
    """The node's own executor (``make_executor``) spinning ``nodes`` in a background thread (context manager)."""

    def __init__(self, context, *nodes) -> None:
        import threading

        from av_snn_ros.ros.classifier_node import make_executor
        self.executor = make_executor(context)
        for node in nodes:
            self.executor.add_node(node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)

    def __enter__(self) -> 'Spinner':
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.executor.shutdown()
        self.thread.join(10)


def private_namespace(prefix: str = 'test') -> str:
    """A namespace no other test run on this machine uses (they may share the ROS domain by chance)."""
    import uuid
    return f'/{prefix}_{uuid.uuid4().hex[:8]}'


def classifier(context, card_path, overrides: dict | None = None, namespace: str = ''):
    """An ``AvClassifierNode`` with parameter overrides (``{'window.hop_s': 1.0, ...}``)."""
    from rclpy.parameter import Parameter

    from av_snn_ros.ros.classifier_node import AvClassifierNode
    # the fully qualified status name tells this test's classifier from others on the same ROS domain
    values = {'model.card': str(card_path), 'diagnostic_updater.use_fqn': bool(namespace.strip('/')),
              **(overrides or {})}
    return AvClassifierNode(context=context, namespace=namespace,
                            parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])


def isolated(context, card_path, overrides: dict | None = None, prefix: str = 'test'):
    """A classifier and a :class:`Probe` in a private namespace of their own."""
    ns = private_namespace(prefix)
    return classifier(context, card_path, overrides, namespace=ns), Probe(context, namespace=ns)
