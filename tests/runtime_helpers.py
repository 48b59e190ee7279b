"""Shared helpers of the runtime tests: a small model card and real audio-visual data laid out as a robot
would deliver it (camera frames at a fixed rate, 20 ms audio chunks, consecutive 1 s utterances)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from av_snn_ros.preprocessing import PreprocessConfig, preprocess_window

LABELS = [str(d) for d in range(10)]
CARD_MODEL = 'misnet_tiny'
NS_PER_S = 1_000_000_000


def make_card(tmp_path_factory) -> Path:
    """An untrained ``misnet_tiny`` card (weights + ONNX), written once per test session."""
    folder = tmp_path_factory.getbasetemp() / f'{CARD_MODEL}_card'
    card = folder / 'card.yaml'
    if not card.is_file():
        import torch

        from av_snn_ros.export import preprocess_config_for, write_model_card
        from av_snn_ros.models.registry import create_model
        torch.manual_seed(0)
        model = create_model(CARD_MODEL, num_classes=len(LABELS))
        pre = preprocess_config_for(model)
        write_model_card(CARD_MODEL, folder, LABELS, pre, state_dict=_bn_calibrated(model, pre))
    return card


def _bn_calibrated(model, cfg: PreprocessConfig, windows: int = 10) -> dict:
    """Fresh weights with BatchNorm statistics measured on real training windows.

    Untrained BN statistics leave every LIF layer silent on real inputs, so all outputs would equal the
    biases; calibrated statistics make the untrained model's outputs depend on its input.
    """
    import torch

    from av_snn_ros.paths import default_data_root
    from av_snn_training.data.av_digits import AVDigits
    root = default_data_root()
    if root is None:
        raise FileNotFoundError('real data not found: set AV_SNN_DATA_ROOT')
    ds = AVDigits(root, 'train', cfg=cfg, num=windows)
    audio = torch.stack([ds[i][0] for i in range(windows)], dim=1)      # (T, B, 1, Ha, Wa)
    visual = torch.stack([ds[i][1] for i in range(windows)], dim=1)     # (T, B, C, Hv, Wv)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None                                           # cumulative average
    model.train()
    with torch.no_grad():
        model(audio, visual)
    model.eval()
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


def recording(cfg: PreprocessConfig, data_root: Path, num: int, t0_s: int = 1000) -> Recording:
    ds = dataset(cfg, data_root, num)
    raws = [ds.raw(i) for i in range(num)]
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


def offline_labels(card, rec: Recording) -> list[int]:
    """The card's torch model on each segment, preprocessed exactly as training/evaluation does."""
    from av_snn_ros.backends.torch_backend import TorchBackend
    cfg = card.preprocessing
    backend = TorchBackend(card, threads=1)
    n = cfg.window_samples
    out = []
    for i, image in enumerate(rec.images):
        a, v = preprocess_window(rec.audio[i * n:(i + 1) * n], [image] * cfg.timesteps, cfg)
        out.append(int(backend.infer(a[:, None], v[:, None]).logits.argmax()))
    return out
