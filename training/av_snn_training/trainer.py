"""The offline training loop: ``train(cfg)`` = seed, build, (resume), train/validate per epoch, export best.

Small pure pieces (``build_model``, ``build_optimizer``, ``lr_at``, ``train_one_epoch``, ``evaluate``) and
one readable ``train`` function, in the nanoGPT spirit. Reproducibility contract:

- the run is a deterministic function of the recipe: all seeds derive from ``cfg.seed``; the sample
  order of epoch ``e`` is a ``DistributedSampler`` permutation seeded by ``(seed, e)``;
- ``last.pt`` is written after every epoch with model, optimiser, epoch, step, history, best score and
  every rank's RNG states, so ``resume`` continues bit-identically (tests/test_training.py);
- checkpoints hold tensors and plain Python values only and load with ``torch.load(weights_only=True)``.

Output folder (``cfg.out_dir``): ``last.pt``, ``best.pt`` (weights of the best validation epoch),
``metrics.json``, ``curves.png``, ``confusion.png``, ``test_predictions.json`` and ``card/`` (the model
card of the best epoch: weights, ONNX, card.yaml).
"""
from __future__ import annotations

import contextlib
import datetime
import importlib
import inspect
import json
import logging
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from . import distributed as D
from .evaluate import Predictions, predict, sample_records, summarize, time_first
from .recipe import TrainConfig

log = logging.getLogger('av_snn_training')

CHECKPOINT_FORMAT = 1
LAST_CHECKPOINT = 'last.pt'
BEST_CHECKPOINT = 'best.pt'
METRICS_FILE = 'metrics.json'
PREDICTIONS_FILE = 'test_predictions.json'
CURVES_PLOT = 'curves.png'
CONFUSION_PLOT = 'confusion.png'
CARD_DIR = 'card'
MODEL_CARD_MD = 'MODEL_CARD.md'
PROGRESS_LOG_INTERVAL_S = 30.0
# Mixes the epoch into the DataLoader's generator seed (worker seeds), independent of the sampler's.
_EPOCH_SEED_STRIDE = 1_000_003

# Data sets: name -> "module:Class". Every class takes (root, split=..., cfg=PreprocessConfig, seed=...,
# num=...); the audio-image sets also need ``image_root`` (give it in the recipe's dataset_args).
DATASET_CLASSES: dict[str, str] = {
    'av_digits': 'av_snn_training.data.av_digits:AVDigits',
    'cremad': 'av_snn_training.data.crema_d:CremaD',
    'ave': 'av_snn_training.data.ave:AVE',
    'us8k_av': 'av_snn_training.data.audio_image:UrbanSound8KAV',
    'cifar10_av': 'av_snn_training.data.audio_image:Cifar10AV',
    'ravdess': 'av_snn_training.data.ravdess:Ravdess',
}
IMAGE_ROOT_DATASETS = ('us8k_av', 'cifar10_av')
# Splits each data set defines itself (others get 'val' from a train holdout, see recipe.VAL_SPLITS).
NATIVE_SPLITS: dict[str, tuple[str, ...]] = {'av_digits': ('train', 'val', 'test'), 'ave': ('train', 'val', 'test'),
                                             'ravdess': ('train', 'val', 'test')}


# ------------------------------------------------------------------------------------------- building

def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic_kernels(enabled: bool, device: torch.device):
    """Deterministic CUDA kernels for the duration of a run (restored afterwards).

    Seeds alone do not make a CUDA run repeatable: cuDNN picks convolution algorithms that accumulate
    weight gradients with atomics, so two runs (or a run and its resume) drift apart from the first step
    (seen on an H200; tests/test_training.py). The CPU kernels used here are deterministic already.
    An op without a deterministic CUDA kernel then raises instead of silently varying; the error says
    how to opt out (``deterministic: false``).
    """
    if not enabled or device.type != 'cuda':
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    # cuBLAS needs a fixed workspace configuration to be deterministic (read when its handle is made)
    os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    except RuntimeError as exc:
        if 'deterministic' in str(exc):
            raise RuntimeError(f'{exc}\n(this run asked for deterministic CUDA kernels; set deterministic: false '
                               'in the recipe to train with non-repeatable ones)') from exc
        raise
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1:]


def _import(spec: str) -> Any:
    module_name, attr = spec.split(':')
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f'data set loader {spec} is not available: {exc}') from exc


def build_dataset(cfg: TrainConfig, split: str, data_root: str | Path) -> Dataset:
    """The ``split`` (train | val | test) of ``cfg.dataset`` preprocessed with ``cfg.preprocess_config()``.

    ``val`` follows ``cfg.val_split``; with ``train_holdout`` the train and val splits are complementary
    seeded subsets of the data set's training split.
    """
    if split not in ('train', 'val', 'test'):
        raise ValueError(f'unknown split {split!r}')
    native = NATIVE_SPLITS.get(cfg.dataset, ('train', 'test'))
    if split == 'val' and cfg.val_split == 'test':
        split = 'test'
    elif split == 'val' and cfg.val_split == 'val' and 'val' not in native:
        raise ValueError(f'data set {cfg.dataset} has no val split: set val_split to train_holdout or test')
    holdout = cfg.val_split == 'train_holdout' and split in ('train', 'val')
    if cfg.dataset in IMAGE_ROOT_DATASETS and 'image_root' not in cfg.dataset_args:
        raise ValueError(f'data set {cfg.dataset} pairs audio with images from a second folder: pass '
                         "dataset_args='{image_root: /path/to/images}' (data_root is the audio folder)")
    cls = _import(DATASET_CLASSES[cfg.dataset])
    kwargs: dict[str, Any] = dict(split='train' if holdout else split, cfg=cfg.preprocess_config(), seed=cfg.seed,
                                  **cfg.dataset_args)
    if cfg.dataset == 'av_digits':
        kwargs['protocol'] = cfg.protocol
        kwargs['speakers'] = cfg.test_speakers if split == 'test' else cfg.train_speakers
    elif cfg.dataset == 'ravdess':   # fixed val actors; train/test actors may be overridden
        kwargs['actors'] = {'test': cfg.test_speakers, 'train': cfg.train_speakers}.get(split)
    if split == 'train' and cfg.train_num is not None and not holdout:
        kwargs['num'] = cfg.train_num
    dataset = cls(data_root, **kwargs)
    if not holdout:
        return robust(dataset, cfg, split)
    if cfg.augment is not None:
        raise ValueError('augment needs a data set with its own val split (val_split: val)')
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(cfg.seed))
    n_val = max(1, int(round(cfg.val_fraction * len(dataset))))
    indices = order[:n_val] if split == 'val' else order[n_val:]
    if split == 'train' and cfg.train_num is not None:
        indices = indices[:cfg.train_num]
    return torch.utils.data.Subset(dataset, sorted(indices.tolist()))


def robust(dataset: Dataset, cfg: TrainConfig, split: str) -> Dataset:
    """``dataset`` wrapped in the robustness training of ``cfg.augment`` (unchanged when it is off):
    augmented + idle windows for train, the fixed clean/noisy/idle calibration mix for val, the clean
    items (with the ``none`` class in the labels) for test."""
    aug = cfg.augment_config()
    if aug is None:
        return dataset
    from .data.augment import RobustDataset
    mode = {'train': 'train', 'val': 'val'}.get(split, 'clean')
    return RobustDataset(dataset, dataset_labels(dataset), aug, mode, cfg.seed)


class CachedDataset(Dataset):
    """Keeps every item of ``base`` after its first load (epoch 2+ skip decoding and preprocessing).

    Data sets whose items change with the epoch (``set_epoch``: noise augmentation, random key frames)
    are detected when the epoch changes, by reloading a few cached items: if any differs, the cache is
    dropped every epoch, so caching never freezes one random draw. The cache lives in the loading
    process, so it only helps with ``num_workers: 0``. Attributes of ``base`` stay reachable.
    """

    PROBES = 3   # cached items reloaded to tell whether the items depend on the epoch

    def __init__(self, base: Dataset) -> None:
        self.base = base
        self._items: dict[int, Any] = {}
        self._epoch_dependent: bool | None = None

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> Any:
        if i not in self._items:
            self._items[i] = self.base[i]
        return self._items[i]

    def set_epoch(self, epoch: int) -> None:
        _set_data_epoch(self.base, epoch)
        if self._epoch_dependent is None and self._items:
            probes = list(self._items)[:self.PROBES]
            self._epoch_dependent = any(not _same_item(self._items[i], self.base[i]) for i in probes)
            if self._epoch_dependent:
                log.info('%s items change with the epoch: sample cache disabled', type(self.base).__name__)
        if self._epoch_dependent:
            self._items.clear()

    def __getattr__(self, name: str) -> Any:
        if name in ('base', '_items', '_epoch_dependent'):   # not yet set (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.base, name)


def _same_item(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(map(_same_item, a, b))
    return a == b


def dataset_labels(dataset: Dataset) -> list[str]:
    """Class names of a data set (its module's ``LABELS`` or its ``classes`` attribute)."""
    dataset = _unwrap(dataset)
    labels = getattr(dataset, 'classes', None) or getattr(inspect.getmodule(type(dataset)), 'LABELS', None)
    if not labels:
        raise ValueError(f'{type(dataset).__name__} exposes neither `classes` nor a module-level LABELS')
    return [str(x) for x in labels]


def build_model(cfg: TrainConfig, num_classes: int) -> torch.nn.Module:
    """The registered model ``cfg.model`` with ``cfg.model_args`` and the data set's class count."""
    from av_snn_ros.models.registry import create_model
    args = dict(cfg.model_args)
    if 'num_classes' in args and args['num_classes'] != num_classes:
        raise ValueError(f'model_args.num_classes={args["num_classes"]} but the data set has {num_classes} classes')
    args['num_classes'] = num_classes
    return create_model(cfg.model, **args)


def modality_heads(model: torch.nn.Module) -> tuple[str, ...]:
    return tuple(getattr(model, 'modality_heads', ('audio', 'visual')))


def build_loss_fn(cfg: TrainConfig, model: torch.nn.Module) -> Callable:
    """``cfg.loss`` with ``cfg.loss_args``; told the model's real modality heads when the loss needs them."""
    from av_snn_ros.models.losses import LOSSES, build_loss
    kwargs = dict(cfg.loss_args)
    if cfg.loss in LOSSES and 'modality_heads' in inspect.signature(LOSSES[cfg.loss]).parameters:
        kwargs.setdefault('modality_heads', modality_heads(model))
    return build_loss(cfg.loss, **kwargs)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only (>= 2-D); biases, norms and per-neuron scalars such as
    MLIF's alphas are not pulled towards zero (they have no "size" to regularise)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{'params': decay, 'weight_decay': weight_decay}, {'params': no_decay, 'weight_decay': 0.0}]


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum) / AdamW / Adam over :func:`param_groups`, at the schedule's first learning rate."""
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == 'sgd':
        return torch.optim.SGD(groups, lr=cfg.peak_lr, momentum=cfg.momentum)
    betas = (cfg.momentum, 0.999)
    if cfg.optimizer == 'adamw':
        return torch.optim.AdamW(groups, lr=cfg.peak_lr, betas=betas)
    return torch.optim.Adam(groups, lr=cfg.peak_lr, betas=betas)


def lr_at(step: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """Learning rate of optimiser step ``step`` (0-based, counted over the whole run). Pure.

    Linear warm-up to ``cfg.peak_lr`` over ``warmup_epochs``, then ``cosine`` decay reaching ``lr_min`` at
    the last step, ``step`` decay by ``lr_step_gamma`` every ``lr_step_epochs`` (floored at ``lr_min``),
    or ``constant``.
    """
    if step < 0 or steps_per_epoch < 1:
        raise ValueError(f'need step >= 0 and steps_per_epoch >= 1, got {step}, {steps_per_epoch}')
    peak = cfg.peak_lr
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return peak * (step + 1) / warmup
    if cfg.lr_schedule == 'constant':
        return peak
    if cfg.lr_schedule == 'step':
        return max(cfg.lr_min, peak * cfg.lr_step_gamma ** ((step // steps_per_epoch) // cfg.lr_step_epochs))
    decay_steps = cfg.epochs * steps_per_epoch - warmup
    progress = min(1.0, (step - warmup) / max(1, decay_steps - 1))
    return cfg.lr_min + 0.5 * (peak - cfg.lr_min) * (1.0 + math.cos(math.pi * progress))


def steps_per_epoch(num_samples: int, cfg: TrainConfig) -> int:
    """Optimiser steps per epoch: whole global batches only (the same for every world size)."""
    steps = num_samples // cfg.batch_size
    if steps < 1:
        raise ValueError(f'the training set has {num_samples} samples, fewer than one batch of {cfg.batch_size}')
    return min(steps, cfg.max_batches_per_epoch) if cfg.max_batches_per_epoch else steps


def _seed_worker(worker_id: int) -> None:
    # DataLoader seeds torch per worker from its generator; derive numpy/random from that seed too.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_train_loader(dataset: Dataset, cfg: TrainConfig, ctx: D.DistContext
                       ) -> tuple[DataLoader, DistributedSampler, torch.Generator]:
    """Per-rank loader of ``batch_size / world_size`` samples; rank ``r`` takes every world_size-th
    sample of the epoch's permutation, so the ranks' batches together are the single-process batch."""
    if cfg.batch_size % (ctx.world_size * cfg.grad_accum_steps):
        raise ValueError(f'batch_size {cfg.batch_size} must be divisible by world_size x grad_accum_steps '
                         f'= {ctx.world_size} x {cfg.grad_accum_steps}')
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=cfg.seed, drop_last=True)
    generator = torch.Generator()
    loader = DataLoader(dataset, batch_size=cfg.batch_size // ctx.world_size, sampler=sampler, drop_last=True,
                        num_workers=cfg.num_workers, generator=generator, worker_init_fn=_seed_worker,
                        pin_memory=ctx.device.type == 'cuda')
    return loader, sampler, generator


def build_eval_loader(dataset: Dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    """Sequential loader (data set order, every sample once)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)


# ------------------------------------------------------------------------------------------ the loop

def train_one_epoch(step_module: torch.nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    loss_fn: Callable, cfg: TrainConfig, ctx: D.DistContext, epoch: int,
                    n_steps: int) -> dict[str, float]:
    """One epoch of ``n_steps`` optimiser steps; returns mean train loss/accuracy over all ranks.

    Each rank's batch is split into ``grad_accum_steps`` interleaved micro-batches (every A-th sample),
    whose ``loss / A`` gradients accumulate; DDP averages over ranks. The step's update is therefore the
    gradient of the mean loss over the global batch.
    """
    from tqdm import tqdm
    step_module.train()
    accum = cfg.grad_accum_steps
    loss_sum = correct = seen = 0.0
    lr = optimizer.param_groups[0]['lr']
    interactive = sys.stderr.isatty()
    # In a log file (not a terminal) refresh rarely, so the log keeps a readable progress trail.
    bar = tqdm(total=n_steps, desc=f'epoch {epoch + 1}/{cfg.epochs}', leave=False, disable=not ctx.is_main,
               dynamic_ncols=True, mininterval=1.0 if interactive else PROGRESS_LOG_INTERVAL_S, file=sys.stderr)
    for i, (audio, visual, label) in enumerate(loader):
        if i >= n_steps:
            break
        lr = lr_at(epoch * n_steps + i, cfg, n_steps)
        for group in optimizer.param_groups:
            group['lr'] = lr
        audio, visual = time_first(audio.to(ctx.device, non_blocking=True), visual.to(ctx.device, non_blocking=True))
        label = label.to(ctx.device)
        optimizer.zero_grad(set_to_none=True)
        for j in range(accum):
            # DDP: only the last micro-batch all-reduces gradients.
            sync = contextlib.nullcontext() if (j == accum - 1 or not ctx.distributed) else step_module.no_sync()
            with sync:
                # contiguous: a strided view can make oneDNN pick another conv kernel, and rounding
                # differences flip spikes (accumulation must match DDP's contiguous per-rank batches)
                out = step_module(audio[:, j::accum].contiguous(), visual[:, j::accum].contiguous())  # (T, B/A, ...)
                target = label[j::accum]
                loss, _ = loss_fn(out, target)
                (loss / accum).backward()
            loss_sum += float(loss.detach()) * len(target)
            correct += float((out['logits'].detach().argmax(1) == target).sum())
            seen += len(target)
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(step_module.parameters(), cfg.grad_clip)
        optimizer.step()
        bar.update(1)
        bar.set_postfix(loss=f'{loss_sum / seen:.4f}', acc=f'{correct / seen:.3f}', lr=f'{lr:.2e}')
    bar.close()
    loss_sum, correct, seen = D.all_reduce_sum([loss_sum, correct, seen], ctx)
    return {'train_loss': loss_sum / max(1.0, seen), 'train_accuracy': correct / max(1.0, seen), 'lr': lr}


def evaluate(model: torch.nn.Module, loader: DataLoader, labels: Sequence[str], device: torch.device,
             max_batches: int | None = None, loss_fn: Callable | None = None) -> tuple[dict, Predictions]:
    """Summary metrics (see :func:`evaluate.summarize`) and raw predictions of ``model`` on ``loader``."""
    pred = predict(model, loader, device, max_batches=max_batches, loss_fn=loss_fn)
    return summarize(pred, labels, modality_heads(model)), pred


# ---------------------------------------------------------------------------------------- checkpoints

def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain values (``weights_only``-loadable)."""
    np_state = np.random.get_state()
    state = {'torch': torch.get_rng_state(), 'python': random.getstate(),
             'numpy': {'name': np_state[0], 'keys': torch.from_numpy(np_state[1].astype(np.int64)),
                       'pos': int(np_state[2]), 'has_gauss': int(np_state[3]), 'cached': float(np_state[4])}}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state['torch'])
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    n = state['numpy']
    np.random.set_state((n['name'], n['keys'].numpy().astype(np.uint32), n['pos'], n['has_gauss'], n['cached']))
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Atomic write (temp file + rename): an interrupted save never leaves a truncated checkpoint."""
    tmp = path.with_name(path.name + '.tmp')
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by :func:`train` (``weights_only=True``: no code runs while loading)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint not found: {path}')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:   # torch raises several types for corrupt or foreign files
        raise ValueError(f'{path}: not a loadable checkpoint ({exc})') from exc
    if not isinstance(ckpt, dict) or ckpt.get('format') != CHECKPOINT_FORMAT or 'model' not in ckpt:
        raise ValueError(f'{path}: not an av-snn training checkpoint (format {CHECKPOINT_FORMAT})')
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any]) -> tuple[torch.nn.Module, TrainConfig, list[str]]:
    """Rebuild the model of a checkpoint (structure from its stored config) and load its weights."""
    cfg = TrainConfig.from_dict(ckpt['config'])
    labels = list(ckpt['labels'])
    model = build_model(cfg, len(labels))
    model.load_state_dict(ckpt['model'])
    return model.eval(), cfg, labels


def _git_revision() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ('-dirty' if dirty else '')


# ---------------------------------------------------------------------------------------------- train

def resolve_data_root(cfg: TrainConfig, data_root: str | Path | None) -> Path:
    """Explicit argument, else the recipe's ``data_root``, else ``av_snn_ros.paths.default_data_root()``."""
    from av_snn_ros.paths import default_data_root
    root = data_root or cfg.data_root or default_data_root()
    if root is None:
        raise ValueError('no data root: pass --data-root, set data_root in the recipe or AV_SNN_DATA_ROOT')
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f'data root is not a folder: {root}')
    return root


def train(cfg: TrainConfig, data_root: str | Path | None = None, resume: bool = False,
          stop_after_epochs: int | None = None) -> dict[str, Any]:
    """Train ``cfg`` into ``cfg.out_dir``; returns the metrics dict (rank 0; other ranks get ``{}``).

    ``resume`` continues from ``out_dir/last.pt``. ``stop_after_epochs`` ends this invocation after that
    many epochs (a later ``resume`` continues), e.g. to fit a run into preemptible time slices; the final
    test, plots and model card are only produced once all ``cfg.epochs`` are done.
    """
    ctx = D.init_distributed(cfg.device)
    if not ctx.is_main:
        log.setLevel(logging.WARNING)
    try:
        with deterministic_kernels(cfg.deterministic, ctx.device):
            return _train(cfg, ctx, resolve_data_root(cfg, data_root), resume, stop_after_epochs)
    finally:
        D.cleanup(ctx)


def _train(cfg: TrainConfig, ctx: D.DistContext, data_root: Path, resume: bool,
           stop_after_epochs: int | None) -> dict[str, Any]:
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    out_dir = Path(cfg.out_dir)
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    git_revision = _git_revision() if ctx.is_main else None   # the code this run starts with

    train_set = build_dataset(cfg, 'train', data_root)
    val_set = build_dataset(cfg, 'val', data_root)
    labels = dataset_labels(train_set)
    if cfg.cache_samples:
        train_set, val_set = CachedDataset(train_set), CachedDataset(val_set)
    model = build_model(cfg, len(labels)).to(ctx.device)
    optimizer = build_optimizer(model, cfg)
    loss_fn = build_loss_fn(cfg, model)
    n_steps = steps_per_epoch(len(train_set), cfg)
    eval_bs = cfg.eval_batch_size or cfg.batch_size
    log.info('%s on %s/%s: %d train (%d steps/epoch of %d), %d val samples; %s params; %s x %d',
             cfg.model, cfg.dataset, cfg.protocol, len(train_set), n_steps, cfg.batch_size, len(val_set),
             f'{sum(p.numel() for p in model.parameters()):,}', ctx.device, ctx.world_size)

    start_epoch, history, best = 0, [], None
    if not resume and ctx.is_main and (out_dir / LAST_CHECKPOINT).exists():
        log.warning('%s holds an earlier run: starting over and overwriting it (use --resume to continue it)',
                    out_dir)
    if resume:
        ckpt = load_checkpoint(out_dir / LAST_CHECKPOINT)
        from .recipe import check_resume_compatible
        check_resume_compatible(TrainConfig.from_dict(ckpt['config']), cfg)
        model.load_state_dict(ckpt['model'])
        optimizer.load_state_dict(ckpt['optimizer'])
        start_epoch, history, best = int(ckpt['epoch']), list(ckpt['history']), ckpt['best']
        rngs = ckpt['rng']
        if len(rngs) == ctx.world_size:
            set_rng_state(rngs[ctx.rank])
        else:   # data order does not depend on the world size; only in-model randomness changes
            log.warning('resuming on %d ranks a checkpoint written by %d: per-rank RNG streams reseeded',
                        ctx.world_size, len(rngs))
            seed_everything(cfg.seed + 7919 * start_epoch + ctx.rank)
        log.info('resumed %s at epoch %d/%d', out_dir / LAST_CHECKPOINT, start_epoch, cfg.epochs)

    step_module = D.wrap_for_training(model, ctx, cfg.ddp_find_unused_parameters)
    loader, sampler, generator = build_train_loader(train_set, cfg, ctx)
    val_loader = build_eval_loader(val_set, eval_bs, cfg.num_workers)

    completed = start_epoch
    for epoch in range(start_epoch, cfg.epochs):
        if stop_after_epochs is not None and epoch - start_epoch >= stop_after_epochs:
            break
        sampler.set_epoch(epoch)
        _set_data_epoch(train_set, epoch)
        generator.manual_seed(cfg.seed * _EPOCH_SEED_STRIDE + epoch)
        t0 = time.perf_counter()
        stats = train_one_epoch(step_module, loader, optimizer, loss_fn, cfg, ctx, epoch, n_steps)
        completed = epoch + 1
        record: dict[str, Any] = {'epoch': completed, **stats}
        if ctx.is_main:
            val, _ = evaluate(model, val_loader, labels, ctx.device, cfg.max_eval_batches, loss_fn)
            record.update(val_loss=val.get('loss'), val_accuracy=val['accuracy'],
                          val_audio_accuracy=val['audio_accuracy'], val_visual_accuracy=val['visual_accuracy'],
                          time_s=round(time.perf_counter() - t0, 2))
            history.append(record)
            log.info('epoch %d/%d  lr %.2e  train loss %.4f acc %.2f%%  val loss %.4f acc %.2f%% '
                     '(audio head %s, visual head %s)  %.1fs', completed, cfg.epochs, stats['lr'],
                     stats['train_loss'], 100 * stats['train_accuracy'], val.get('loss', float('nan')),
                     100 * val['accuracy'], _pct(val['audio_accuracy']), _pct(val['visual_accuracy']),
                     record['time_s'])
            if best is None or val['accuracy'] > best['val_accuracy']:   # ties keep the earlier epoch
                best = {'epoch': completed, 'val_accuracy': val['accuracy']}
                save_checkpoint(out_dir / BEST_CHECKPOINT, _payload(cfg, model, labels, completed, best, history))
        rngs = D.gather_objects(rng_state(), ctx)   # after validation: exactly where a resume restarts
        if ctx.is_main:
            save_checkpoint(out_dir / LAST_CHECKPOINT, {
                **_payload(cfg, model, labels, completed, best, history),
                'optimizer': optimizer.state_dict(), 'rng': rngs, 'world_size': ctx.world_size,
                'global_step': completed * n_steps})
        D.barrier(ctx)

    result: dict[str, Any] = {}
    if ctx.is_main and completed == cfg.epochs:
        data_info = {'train_samples': len(train_set), 'val_samples': len(val_set),
                     'train_speakers': _listed(getattr(train_set, 'speakers', None)),
                     'steps_per_epoch': n_steps, 'world_size': ctx.world_size}
        result = finish(cfg, model, labels, history, best, data_root, ctx.device, data_info, git_revision)
    elif ctx.is_main:
        log.info('stopped after epoch %d of %d; continue with --resume', completed, cfg.epochs)
        result = {'config': cfg.to_dict(), 'history': history, 'best': best, 'finished': False}
    D.barrier(ctx)
    return result


def _unwrap(dataset: Dataset) -> Dataset:
    """The data set under Subset / CachedDataset wrappers."""
    while isinstance(dataset, (CachedDataset, torch.utils.data.Subset)):
        dataset = dataset.base if isinstance(dataset, CachedDataset) else dataset.dataset
    return dataset


def _set_data_epoch(dataset: Dataset, epoch: int) -> None:
    """Tell a data set with per-epoch randomness (noise augmentation, random key frames) the epoch."""
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    if hasattr(dataset, 'set_epoch'):
        dataset.set_epoch(epoch)


def _pct(x: float | None) -> str:
    return 'n/a' if x is None else f'{100 * x:.2f}%'


def _payload(cfg: TrainConfig, model: torch.nn.Module, labels: list[str], epoch: int,
             best: dict | None, history: list[dict]) -> dict[str, Any]:
    return {'format': CHECKPOINT_FORMAT, 'model': {k: v.detach().cpu() for k, v in model.state_dict().items()},
            'epoch': epoch, 'config': cfg.to_dict(), 'labels': list(labels), 'model_name': cfg.model,
            'model_args': dict(cfg.model_args), 'best': best, 'history': [dict(h) for h in history]}


def finish(cfg: TrainConfig, model: torch.nn.Module, labels: list[str], history: list[dict],
           best: dict | None, data_root: Path, device: torch.device,
           data_info: dict[str, Any] | None = None, git_revision: str | None = None) -> dict[str, Any]:
    """Best-epoch weights -> test metrics, ``metrics.json``, plots, ``test_predictions.json``, model card
    (``card/`` with ``MODEL_CARD.md``)."""
    from .calibration import expected_calibration_error, fit_logit_scale
    from .plots import plot_confusion, plot_curves, render_model_card
    out_dir = Path(cfg.out_dir)
    best_ckpt = load_checkpoint(out_dir / BEST_CHECKPOINT)
    model.load_state_dict(best_ckpt['model'])
    test_set = build_dataset(cfg, 'test', data_root)
    test, pred = evaluate(model, build_eval_loader(test_set, cfg.eval_batch_size or cfg.batch_size,
                                                   cfg.num_workers),
                          labels, device, cfg.max_eval_batches)
    log.info('best epoch %d (val %.2f%%): test accuracy %.2f%% (audio head %s, visual head %s) on %d samples',
             best['epoch'], 100 * best['val_accuracy'], 100 * test['accuracy'], _pct(test['audio_accuracy']),
             _pct(test['visual_accuracy']), test['num_samples'])
    # Temperature scaling on the validation split (never the test split, unless the recipe validates on
    # test): the card's logit_scale makes the node's published confidence a calibrated probability.
    val_set = build_dataset(cfg, 'val', data_root)
    _, val_pred = evaluate(model, build_eval_loader(val_set, cfg.eval_batch_size or cfg.batch_size,
                                                    cfg.num_workers), labels, device, cfg.max_eval_batches)
    logit_scale = fit_logit_scale(val_pred.logits, val_pred.targets)
    calibration = {'logit_scale': logit_scale, 'split': 'val', 'samples': int(len(val_pred.targets)),
                   'val_ece_before': expected_calibration_error(val_pred.logits, val_pred.targets, 1.0),
                   'val_ece_after': expected_calibration_error(val_pred.logits, val_pred.targets, logit_scale),
                   'test_ece': expected_calibration_error(pred.logits, pred.targets, logit_scale)}
    calibration.update(_acceptance(cfg, model, labels, val_pred, logit_scale))
    metrics = {
        'config': cfg.to_dict(), 'labels': labels, 'modality_heads': list(modality_heads(model)),
        'modalities': list(getattr(model, 'modalities', ('audio', 'visual'))),
        'calibration': calibration, 'energy': _energy(model, test_set, cfg),
        'data': {**(data_info or {}), **_data_description(cfg, test_set, data_root)},
        'parameters': sum(p.numel() for p in model.parameters()), 'history': history, 'best': best,
        'test': test, 'finished': True, 'git_revision': git_revision or _git_revision(),
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    }
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    (out_dir / PREDICTIONS_FILE).write_text(json.dumps(
        {'split': 'test', 'protocol': cfg.protocol, 'samples': sample_records(test_set, pred, labels)}, indent=1))
    title = f'{cfg.model} on {cfg.dataset} ({cfg.protocol})'
    plot_curves(history, out_dir / CURVES_PLOT, title)
    plot_confusion(test['confusion_matrix'], labels, out_dir / CONFUSION_PLOT,
                   f'{title}: test {100 * test["accuracy"]:.2f}%')
    card_path = export_card(cfg, model, labels, metrics, out_dir / CARD_DIR)
    metrics['card'] = str(card_path)
    (card_path.parent / MODEL_CARD_MD).write_text(render_model_card(metrics, DATA_ATTRIBUTION.get(cfg.dataset)))
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    return metrics


def _acceptance(cfg: TrainConfig, model: torch.nn.Module, labels: list[str], val_pred: Predictions,
                logit_scale: float) -> dict[str, Any]:
    """Per-modality temperatures and, for a model with the background class, the acceptance threshold,
    all fitted on the validation split (with ``augment``: the clean/noisy/idle calibration mix)."""
    from av_snn_ros.decision import NO_EVENT_LABEL
    from .calibration import fit_accept_threshold, fit_logit_scale, softmax
    out: dict[str, Any] = {}
    heads = modality_heads(model)
    if len(heads) > 1:
        for m, logits in (('audio', val_pred.audio_logits), ('visual', val_pred.visual_logits)):
            if m in heads:
                out[f'{m}_logit_scale'] = fit_logit_scale(logits, val_pred.targets)
    if cfg.augment is not None and labels[-1] == NO_EVENT_LABEL:
        out['no_event_label'] = NO_EVENT_LABEL
        out['accept_threshold'] = fit_accept_threshold(softmax(val_pred.logits, logit_scale), val_pred.targets,
                                                       labels, NO_EVENT_LABEL)
    return out


ENERGY_WINDOWS = 16   # test windows whose mean firing rates give the per-window energy estimate


def _energy(model: torch.nn.Module, test_set: Dataset, cfg: TrainConfig) -> dict[str, float] | None:
    """Estimated energy per window (av_snn_ros.models.energy, 45 nm numbers) on the first test windows."""
    from av_snn_ros.models.energy import estimate_energy
    n = min(ENERGY_WINDOWS, len(test_set))
    audio, visual, _ = next(iter(build_eval_loader(test_set, n)))
    audio, visual = time_first(audio, visual)
    device = next(model.parameters()).device
    try:
        return dict(estimate_energy(model.eval(), audio.to(device), visual.to(device)).summary())
    except Exception as exc:   # an estimate is a report extra: never lose a finished run over it
        log.warning('energy estimate failed: %s', exc)
        return None


def _data_description(cfg: TrainConfig, test_set: Dataset, data_root: Path) -> dict[str, Any]:
    desc: dict[str, Any] = {'dataset': cfg.dataset, 'protocol': cfg.protocol, 'data_root': str(data_root),
                            'test_samples': len(test_set)}
    for attr in ('speakers', 'image_source'):
        if hasattr(test_set, attr):
            value = getattr(test_set, attr)
            desc[f'test_{attr}'] = _listed(value)
    return desc


def _listed(value: Any) -> Any:
    return list(value) if isinstance(value, (tuple, list)) else value


# Where the training data came from, copied into every card trained on it (the licences travel with it).
DATA_ATTRIBUTION: dict[str, str] = {
    'av_digits': 'Free Spoken Digit Dataset (Jakobovski et al.), CC BY-SA 4.0; MNIST (LeCun, Cortes, Burges), '
                 'CC BY-SA 3.0',
    'ravdess': 'RAVDESS (Livingstone & Russo 2018, PLoS ONE 13(5): e0196391, doi:10.5281/zenodo.1188976), '
               'speech audio of actors 01-20, CC BY-NC-SA 4.0: NON-COMMERCIAL use only; models trained on it '
               'inherit the non-commercial and share-alike conditions',
}


# Calibration results written into the card (perception contract, docs/models.md).
CARD_CALIBRATION_KEYS = ('audio_logit_scale', 'visual_logit_scale', 'no_event_label', 'accept_threshold')


def export_card(cfg: TrainConfig, model: torch.nn.Module, labels: list[str], metrics: dict[str, Any],
                out_dir: Path) -> Path:
    """Model card folder (``model.pt``, ``model.onnx``, ``card.yaml``) of ``model`` with metrics/provenance."""
    from av_snn_ros.export import write_model_card
    test = metrics['test']
    card_metrics = {
        'test_accuracy': test['accuracy'], 'test_audio_accuracy': test['audio_accuracy'],
        'test_visual_accuracy': test['visual_accuracy'], 'test_samples': test['num_samples'],
        'val_accuracy': metrics['best']['val_accuracy'], 'best_epoch': metrics['best']['epoch'],
        'per_class_recall': test['per_class_recall'],
    }
    data = dict(metrics['data'])
    data.pop('data_root', None)   # a path on the training machine means nothing elsewhere
    if cfg.dataset in DATA_ATTRIBUTION:
        data['attribution'] = DATA_ATTRIBUTION[cfg.dataset]
    training = {'recipe': cfg.replace(data_root=None).to_dict(), 'git_revision': metrics['git_revision'],
                'created': metrics['created']}
    calibration = metrics['calibration']
    card_metrics['test_ece'] = calibration.get('test_ece')
    if metrics.get('energy'):
        card_metrics['energy_mj_per_window'] = metrics['energy']['energy_mj']
    extra = {'name': cfg.resolved_card_name(), 'metrics': card_metrics, 'training': training, 'data': data,
             'logit_scale': calibration['logit_scale'],
             **{k: calibration[k] for k in CARD_CALIBRATION_KEYS if k in calibration},
             'description': cfg.description or f'{cfg.model} trained on {cfg.dataset} ({cfg.protocol})'}
    if metrics.get('modalities') and tuple(metrics['modalities']) != ('audio', 'visual'):
        extra['modalities'] = list(metrics['modalities'])
    return Path(write_model_card(cfg.model, out_dir, labels, cfg.preprocess_config(),
                                 model_args=dict(cfg.model_args), state_dict=model.state_dict(), extra=extra))
