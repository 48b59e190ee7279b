"""The condition suite of ``av-snn eval --conditions``: how a model holds up where a robot spends its time.

Every condition is built from the evaluated split's clean events (``event(i)``: utterance + image) and
windows (``raw(i)``), with seeded noise (``numpy.random.default_rng([seed, condition, i])``); the exact
definitions are in docs/data.md. Each window's calibrated scores (``softmax(logit_scale * logits)``)
go through :func:`av_snn_ros.decision.decide` with the card's ``no_event_label`` / ``accept_threshold``,
the same function the node publishes with, and the per-modality heads through
:func:`av_snn_ros.decision.is_conflict`.

Metrics per condition (all fractions of the condition's windows):

- ``accuracy``: event conditions: the fused top class is the window's event (for ``straddle`` the
  second event, for ``conflict`` the share of windows flagged as a conflict); idle conditions: the
  share reported as no-event;
- ``accept_rate``: share reported as an event (accepted by the decision);
- ``ece``: expected calibration error of the calibrated scores against the window's truth (idle
  windows: the background class; a model without one is always wrong on them);
- ``wrong_over_0_9``: share whose *published* outcome is wrong with a published confidence > 0.9
  (an event window published as another event or as no-event; an idle window published as an event;
  a conflict window is right when it names either sense's event);
- ``mean_confidence``: mean published confidence;
- ``changed_vs_clean`` (``audio_missing`` / ``image_missing``, when ``clean`` runs too): share of windows
  whose fused top class changes when that sense is removed (does the fusion use both senses?).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from av_snn_ros.decision import DEFAULT_CONFLICT_THRESHOLD, decide, is_conflict, no_event_index
from av_snn_ros.preprocessing import PreprocessConfig, fit_length, preprocess_window

from .calibration import expected_calibration_error, softmax
from .data.augment import dbfs_to_rms, noise_floor
from .data.corruptions import AudioCorruption, ImageCorruption, corrupt_audio, corrupt_image, noise, signal_power

CONDITIONS = ('clean', 'noisy', 'audio_noisy', 'image_noisy', 'audio_missing', 'image_missing', 'conflict',
              'idle_silence_black', 'idle_room_grey', 'idle_noise', 'straddle', 'late_onset')
IDLE_CONDITIONS = ('idle_silence_black', 'idle_room_grey', 'idle_noise')
# Conditions that need a camera input / an audio input in the model (skipped with a reason otherwise).
NEEDS_VISUAL = ('image_noisy', 'audio_missing', 'conflict')
NEEDS_AUDIO = ('image_missing',)   # "speech only": meaningful only when the model also has a camera
# Fixed levels (docs/data.md): the noisy protocol's corruptions, the idle levels, the onset.
NOISY_AUDIO = AudioCorruption(snr_db=0.0)
NOISY_IMAGE = ImageCorruption(noise_std=60.0, patches=2, patch_frac=(0.3, 0.5))
FLOOR_DBFS = -70.0          # microphone floor under idle windows
ROOM_DBFS = -45.0           # brown room tone of idle_room_grey
NOISE_DBFS = -25.0          # white noise of idle_noise
GREY_LEVEL, SENSOR_NOISE_STD = 128.0, 2.0
LATE_STEPS = 2              # late_onset: the event fills only the last two timesteps
CONFIDENT = 0.9
_STREAM = 31


@dataclass
class Window:
    """One condition window before preprocessing; ``None`` = that sense is missing."""

    audio: np.ndarray | None
    frames: list[np.ndarray] | None
    target: int                      # event class, or -1 for an idle window
    other: int = -1                  # conflict: the image's class; straddle: the first event


@dataclass
class DecisionParams:
    """What turns logits into a published outcome (from the model card; defaults for checkpoints)."""

    labels: list[str]
    logit_scale: float = 1.0
    audio_logit_scale: float | None = None
    visual_logit_scale: float | None = None
    no_event_label: str | None = None
    accept_threshold: float = 0.0
    conflict_threshold: float = DEFAULT_CONFLICT_THRESHOLD
    heads: tuple[str, ...] = field(default=('audio', 'visual'))

    @classmethod
    def from_card(cls, card: Any) -> 'DecisionParams':
        """The card's own decision fields (``ModelCard`` parses and defaults them, as for the node)."""
        return cls(labels=list(card.labels), logit_scale=card.logit_scale,
                   audio_logit_scale=card.audio_logit_scale, visual_logit_scale=card.visual_logit_scale,
                   no_event_label=card.no_event_label, accept_threshold=float(card.accept_threshold),
                   conflict_threshold=float(card.conflict_threshold), heads=tuple(card.modality_heads))


# ------------------------------------------------------------------------------------------ windows

def _event(dataset: Any, i: int) -> tuple[np.ndarray | None, np.ndarray | None, int]:
    e = dataset.event(i)
    return e.audio, e.image, int(e.label)


def _clean(dataset: Any, i: int) -> np.ndarray:
    raw = dataset.raw(i)
    return raw if isinstance(raw, np.ndarray) else raw.audio


def _floor(n: int, cfg: PreprocessConfig, rng: np.random.Generator) -> np.ndarray:
    return noise_floor(n, FLOOR_DBFS, cfg.sample_rate, rng, kinds=('white',))


def _frames(image: np.ndarray | None, cfg: PreprocessConfig) -> list[np.ndarray] | None:
    return None if image is None else [image] * cfg.timesteps


def build_window(name: str, dataset: Any, i: int, cfg: PreprocessConfig, seed: int) -> Window:
    """Window ``i`` of condition ``name`` (docs/data.md defines each)."""
    rng = np.random.default_rng([seed, _STREAM, CONDITIONS.index(name), i])
    n, t = cfg.window_samples, cfg.timesteps
    utterance, image, label = _event(dataset, i)
    has_image = image is not None
    if name in IDLE_CONDITIONS:
        audio = _floor(n, cfg, rng)
        if name == 'idle_room_grey':
            audio = audio + noise('brown', n, cfg.sample_rate, rng) * np.float32(dbfs_to_rms(ROOM_DBFS))
            frame = np.clip(np.rint(GREY_LEVEL + rng.normal(0, SENSOR_NOISE_STD, image.shape)), 0, 255
                            ).astype(np.uint8) if has_image else None
        elif name == 'idle_noise':
            audio = audio + noise('white', n, cfg.sample_rate, rng) * np.float32(dbfs_to_rms(NOISE_DBFS))
            frame = rng.integers(0, 256, size=image.shape, dtype=np.uint8) if has_image else None
        else:
            frame = np.zeros_like(image) if has_image else None
        return Window(audio.astype(np.float32), _frames(frame, cfg), -1)
    clean = _clean(dataset, i)
    power = signal_power(utterance)
    if name == 'clean':
        return Window(clean, _frames(image, cfg), label)
    if name in ('noisy', 'audio_noisy', 'image_noisy'):
        audio = clean if name == 'image_noisy' else corrupt_audio(clean, power, NOISY_AUDIO, cfg.sample_rate, rng)[0]
        noisy_image = image if name == 'audio_noisy' or not has_image else corrupt_image(image, NOISY_IMAGE, rng)
        return Window(audio, _frames(noisy_image, cfg), label)
    if name == 'audio_missing':
        return Window(None, _frames(image, cfg), label)
    if name == 'image_missing':
        return Window(clean, None, label)
    if name == 'conflict':   # the speech of sample i, the image of the next sample of another class
        j = next(k for k in range(1, len(dataset)) if _event(dataset, (i + k) % len(dataset))[2] != label)
        _, other_image, other = _event(dataset, (i + j) % len(dataset))
        return Window(clean, _frames(other_image, cfg), label, other)
    if name == 'late_onset':  # nothing for the first T-2 steps (floor + black), then the event
        onset = (t - LATE_STEPS) * n // t
        audio = fit_length(utterance, n, offset=onset) + _floor(n, cfg, rng)
        blank = np.zeros_like(image) if has_image else None
        frames = [image if c * cfg.sample_rate >= onset else blank
                  for c in cfg.step_centers_s()] if has_image else None
        return Window(audio.astype(np.float32), frames, label)
    if name == 'straddle':    # the previous sample's event ends at mid-window, this one starts there
        first_audio, first_image, first = _event(dataset, (i - 1) % len(dataset))
        half = n // 2
        audio = fit_length(first_audio[-half:], n, offset=max(0, half - min(len(first_audio), half)))
        audio = audio + fit_length(utterance, n, offset=half) + _floor(n, cfg, rng)
        frames = [image if c * cfg.sample_rate >= half else first_image
                  for c in cfg.step_centers_s()] if has_image else None
        return Window(audio.astype(np.float32), frames, label, first)
    raise ValueError(f'unknown condition {name!r}; use one of {CONDITIONS}')


# ------------------------------------------------------------------------------------------ scoring

@torch.no_grad()
def _logits(model: torch.nn.Module, windows: Sequence[Window], cfg: PreprocessConfig,
            batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out: list[list[np.ndarray]] = [[], [], []]
    model.eval()
    for start in range(0, len(windows), batch_size):
        chunk = [preprocess_window(w.audio, w.frames, cfg) for w in windows[start:start + batch_size]]
        audio = torch.from_numpy(np.stack([a for a, _ in chunk], axis=1))     # (T, B, 1, Ha, Wa)
        visual = torch.from_numpy(np.stack([v for _, v in chunk], axis=1))    # (T, B, C, Hv, Wv)
        for k, x in enumerate(model(audio, visual)):
            out[k].append(x.float().numpy())
    return tuple(np.concatenate(o) for o in out)   # type: ignore[return-value]


def score(windows: Sequence[Window], logits: np.ndarray, audio_logits: np.ndarray, visual_logits: np.ndarray,
          params: DecisionParams, name: str) -> dict[str, Any]:
    """The condition's metrics (module docstring) from the model's raw outputs."""
    labels = params.labels
    background = no_event_index(labels, params.no_event_label)
    probs = softmax(logits, params.logit_scale)
    targets = np.array([w.target for w in windows])
    top = probs.argmax(1)
    if name == 'conflict':   # both senses are right about their own event: naming either one is correct
        others = np.array([w.other for w in windows])
        targets = np.where(top == others, others, targets)
    idle = targets < 0
    truth = np.where(idle, -1 if background is None else background, targets)
    decisions = [decide(p, labels, params.no_event_label, params.accept_threshold) for p in probs]
    published_ok = np.array([(not d.is_event) if target < 0 else (d.is_event and d.class_id == target)
                             for d, target in zip(decisions, targets)])
    confidence = np.array([d.confidence for d in decisions])
    if name in IDLE_CONDITIONS:
        accuracy = float(np.mean([not d.is_event for d in decisions]))
    elif name == 'conflict':
        a_p = softmax(audio_logits, params.audio_logit_scale or params.logit_scale)
        v_p = softmax(visual_logits, params.visual_logit_scale or params.logit_scale)
        has_heads = 'audio' in params.heads and 'visual' in params.heads
        flagged = [has_heads and is_conflict(a, v, labels, params.no_event_label, params.conflict_threshold)
                   for a, v in zip(a_p, v_p)]
        accuracy = float(np.mean(flagged))
    else:
        accuracy = float(np.mean(top == targets))
    # ECE against the truth; an idle window of a model without a background class has no right answer
    ece_targets = np.where(truth < 0, len(labels), truth)
    ece = expected_calibration_error(np.log(np.clip(probs, 1e-12, 1.0)), ece_targets, 1.0)
    out = {'accuracy': accuracy, 'accept_rate': float(np.mean([d.is_event for d in decisions])), 'ece': ece,
           'wrong_over_0_9': float(np.mean(~published_ok & (confidence > CONFIDENT))),
           'mean_confidence': float(confidence.mean()), 'num_windows': len(windows)}
    if name == 'conflict':
        out['follows_audio'] = float(np.mean(top == np.array([w.target for w in windows])))
        out['follows_visual'] = float(np.mean(top == np.array([w.other for w in windows])))
    if name == 'straddle':
        out['reports_first'] = float(np.mean(top == np.array([w.other for w in windows])))
    return out


def applicable(name: str, model_inputs: Sequence[str]) -> str | None:
    """``None`` when the condition applies to a model with these inputs, else the reason it does not."""
    if name in NEEDS_VISUAL and 'visual' not in model_inputs:
        return 'the model has no camera input'
    if name in NEEDS_AUDIO and 'visual' not in model_inputs:
        return 'audio only is the model\'s normal input (see clean)'
    return None


def run_conditions(model: torch.nn.Module, dataset: Any, cfg: PreprocessConfig, params: DecisionParams,
                   seed: int, names: Sequence[str] = CONDITIONS, model_inputs: Sequence[str] = ('audio', 'visual'),
                   batch_size: int = 64, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """``{name: metrics}`` for every condition in ``names`` over all windows of ``dataset``."""
    results: dict[str, Any] = {}
    tops: dict[str, np.ndarray] = {}
    for name in names:
        if name not in CONDITIONS:
            raise ValueError(f'unknown condition {name!r}; use one of {CONDITIONS}')
        reason = applicable(name, model_inputs)
        if reason is not None:
            results[name] = {'skipped': reason}
            continue
        windows = [build_window(name, dataset, i, cfg, seed) for i in range(len(dataset))]
        logits = _logits(model, windows, cfg, batch_size)
        results[name] = score(windows, *logits, params, name)
        tops[name] = logits[0].argmax(1)
        if progress is not None:
            progress(name)
    # does fusion use both senses? the share of decisions that change when one sense is removed
    for name in ('audio_missing', 'image_missing'):
        if name in tops and 'clean' in tops:
            results[name]['changed_vs_clean'] = float(np.mean(tops[name] != tops['clean']))
    return results


def markdown_table(results: dict[str, Any]) -> str:
    """The suite as a Markdown table (skipped conditions left out), for docs and model cards."""
    def pct(x: float) -> str:
        return f'{100 * x:.1f} %'
    rows = ['| condition | accuracy (idle: no-event; conflict: flagged) | accept rate | ECE | wrong at conf > 0.9 '
            '| mean confidence |', '|---|---|---|---|---|---|']
    for name, c in results.items():
        if 'skipped' not in c:
            rows.append(f'| {name} | {pct(c["accuracy"])} | {pct(c["accept_rate"])} | {c["ece"]:.3f} | '
                        f'{pct(c["wrong_over_0_9"])} | {c["mean_confidence"]:.3f} |')
    return '\n'.join(rows)


def main(argv: list[str] | None = None) -> int:
    """``python -m av_snn_training.conditions REPORT.json``: print a report's condition table."""
    import argparse
    import json
    parser = argparse.ArgumentParser(description='print the condition table of an av-snn eval report')
    parser.add_argument('report', type=Path)
    args = parser.parse_args(argv)
    report = json.loads(args.report.read_text())
    if 'conditions' not in report:
        parser.error(f'{args.report} has no conditions (run av-snn eval with --conditions)')
    print(markdown_table(report['conditions']))
    return 0


def plot_conditions(results: dict[str, Any], path: Path, title: str) -> Path:
    """Bar chart of accuracy, accept rate and wrong-over-0.9 per condition."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    names = [n for n in results if 'skipped' not in results[n]]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names)), 4.0))
    for k, (key, label) in enumerate((('accuracy', 'accuracy (idle: no-event)'), ('accept_rate', 'accept rate'),
                                      ('wrong_over_0_9', 'wrong at conf > 0.9'))):
        ax.bar(x + (k - 1) * 0.27, [results[n][key] for n in names], width=0.27, label=label)
    ax.set_xticks(x, names, rotation=35, ha='right')
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == '__main__':
    raise SystemExit(main())
