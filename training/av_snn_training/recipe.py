"""Training recipes: the :class:`TrainConfig` dataclass, strict YAML loading and ``key=value`` overrides.

A recipe is a YAML mapping whose keys are exactly :class:`TrainConfig`'s fields; an unknown key or a value
of the wrong type is a ``ValueError`` naming the key (``av_snn_ros.config.from_dict``). Command-line
overrides (``lr=0.01``, ``model_args={channels: [8, 16]}``) are parsed as YAML scalars and checked the
same way, so ``epochs=ten`` fails instead of silently training with the recipe's value.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from av_snn_ros.config import from_dict, load_yaml, to_dict
from av_snn_ros.preprocessing import PreprocessConfig

DATASETS = ('av_digits', 'cremad', 'ave', 'us8k_av', 'cifar10_av', 'ravdess')
# Data sets split by speaker: train_speakers/test_speakers (RAVDESS: actor numbers) apply to them.
SPEAKER_DATASETS = ('av_digits', 'ravdess')
OPTIMIZERS = ('sgd', 'adamw', 'adam')
SCHEDULES = ('cosine', 'step', 'constant')
PROTOCOLS = ('clean', 'noisy')
# 'val': the data set's own validation split; 'train_holdout': a seeded val_fraction of the training split
# (data sets without one: CREMA-D, UrbanSound8K-AV, CIFAR10-AV); 'test': select on the test split, as the
# papers' reported numbers do (then test accuracy is optimistic; say so when reporting it).
VAL_SPLITS = ('val', 'train_holdout', 'test')
# Data set name here -> its preset in av_snn_training.data.paper_datasets.PAPER_CONFIGS (the papers' input
# sizes and window lengths). AV digits uses PreprocessConfig's defaults, the runtime's.
PAPER_PRESETS = {'cremad': 'crema_d', 'ave': 'ave', 'us8k_av': 'urbansound8k_av', 'cifar10_av': 'cifar10_av'}

# Fields that define *what* is trained. A resumed run takes them from its checkpoint and refuses a
# recipe/override that changes them; every other field (epochs, workers, device, ...) may change on resume.
STRUCTURAL_FIELDS = ('model', 'model_args', 'dataset', 'dataset_args', 'protocol', 'preprocessing', 'val_split',
                     'augment',
                     'val_fraction',
                     'batch_size', 'grad_accum_steps', 'optimizer', 'loss', 'loss_args', 'seed',
                     'train_speakers', 'test_speakers', 'train_num', 'max_batches_per_epoch')


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; stored verbatim in every checkpoint and model card."""

    # --- what to train
    model: str = 'misnet_tiny'                 # registry name (av_snn_ros.models.registry)
    model_args: dict = field(default_factory=dict)   # overrides passed to create_model
    # --- data
    dataset: str = 'av_digits'                 # one of DATASETS
    data_root: str | None = None               # None: --data-root or av_snn_ros.paths.default_data_root()
    protocol: str = 'clean'                    # clean | noisy (corrupted inputs, see data/corruptions.py)
    preprocessing: dict = field(default_factory=dict)   # overrides on the data set's PreprocessConfig
    dataset_args: dict = field(default_factory=dict)    # extra keyword arguments of the data set class
    val_split: str = 'val'                     # one of VAL_SPLITS: what selects the best epoch
    val_fraction: float = 0.1                  # val_split 'train_holdout': seeded share of train held out
    train_speakers: list[str] | None = None    # av_digits: training (and validation) speakers; None: default
    test_speakers: list[str] | None = None     # av_digits: held-out test speakers; None: the data set's default
    train_num: int | None = None               # keep only the first N training samples (smoke runs/tests)
    # robustness training (av_snn_training.data.augment.AugmentConfig fields; {} = defaults; null = off):
    # noise/gain/speed/masks/onsets, image augmentation, idle windows labelled `none`, modality dropout
    augment: dict | None = None
    # --- optimisation
    epochs: int = 10
    batch_size: int = 32                       # GLOBAL batch (all ranks, all accumulation steps together)
    grad_accum_steps: int = 1                  # micro-batches per step; BatchNorm sees batch/accum samples
    optimizer: str = 'sgd'                     # one of OPTIMIZERS
    lr: float = 1e-3                           # peak learning rate (after warm-up)
    lr_batch_ref: int | None = None            # if set: lr is scaled by batch_size / lr_batch_ref (S-CMRL)
    lr_min: float = 1e-5                       # floor reached at the end of training
    lr_schedule: str = 'cosine'                # one of SCHEDULES
    lr_step_epochs: int = 30                   # 'step' schedule: decay every this many epochs ...
    lr_step_gamma: float = 0.1                 # ... by this factor (never below lr_min)
    warmup_epochs: float = 0.0                 # linear warm-up from 0 (in epochs, fractions allowed)
    weight_decay: float = 1e-4                 # applied to weights only, not to biases/norms/scalars
    momentum: float = 0.9                      # SGD momentum / Adam beta1
    grad_clip: float | None = None             # max global gradient norm (None: no clipping)
    loss: str = 'misnet_mse'                   # av_snn_ros.models.losses.build_loss name
    loss_args: dict = field(default_factory=dict)
    # --- run
    seed: int = 0
    num_workers: int = 0
    cache_samples: bool = False                # keep preprocessed samples in memory after first use
                                               # (dropped each epoch for epoch-dependent items)
    device: str = 'auto'                       # auto | cpu | cuda | cuda:N
    deterministic: bool = True                 # CUDA: deterministic kernels (bit-identical resume and reruns)
    torch_threads: int | None = None           # torch.set_num_threads for this run (None: torch default)
    out_dir: str = 'runs/default'
    max_batches_per_epoch: int | None = None   # cap steps per epoch (smoke runs)
    max_eval_batches: int | None = None        # cap validation/test batches (smoke runs)
    eval_batch_size: int | None = None         # None: batch_size
    ddp_find_unused_parameters: bool = False   # set for models whose loss does not touch every parameter
    card_name: str | None = None               # None: '<dataset>_<model>'
    description: str = ''                      # free text copied into the model card

    def __post_init__(self) -> None:
        checks = [
            (self.dataset in DATASETS, f'dataset must be one of {DATASETS}, got {self.dataset!r}'),
            (self.protocol in PROTOCOLS, f'protocol must be one of {PROTOCOLS}, got {self.protocol!r}'),
            (self.optimizer in OPTIMIZERS, f'optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}'),
            (self.val_split in VAL_SPLITS, f'val_split must be one of {VAL_SPLITS}, got {self.val_split!r}'),
            (0 < self.val_fraction < 1, f'val_fraction must be in (0, 1), got {self.val_fraction}'),
            (self.protocol == 'clean' or self.dataset == 'av_digits',
             'the noisy protocol is defined for the av_digits data set only'),
            (self.lr_schedule in SCHEDULES, f'lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}'),
            (self.epochs >= 1, f'epochs must be >= 1, got {self.epochs}'),
            (self.batch_size >= 1, f'batch_size must be >= 1, got {self.batch_size}'),
            (self.grad_accum_steps >= 1, f'grad_accum_steps must be >= 1, got {self.grad_accum_steps}'),
            (self.batch_size % self.grad_accum_steps == 0,
             f'batch_size {self.batch_size} must be divisible by grad_accum_steps {self.grad_accum_steps}'),
            (self.lr > 0 and 0 <= self.lr_min <= self.lr, f'need 0 <= lr_min <= lr and lr > 0, '
             f'got lr={self.lr}, lr_min={self.lr_min}'),
            (self.lr_batch_ref is None or self.lr_batch_ref >= 1, 'lr_batch_ref must be >= 1'),
            (self.lr_step_epochs >= 1 and 0 < self.lr_step_gamma <= 1,
             'need lr_step_epochs >= 1 and 0 < lr_step_gamma <= 1'),
            (0 <= self.warmup_epochs < self.epochs or (self.warmup_epochs == 0),
             f'warmup_epochs must be in [0, epochs), got {self.warmup_epochs}'),
            (self.weight_decay >= 0 and 0 <= self.momentum < 1, 'need weight_decay >= 0 and 0 <= momentum < 1'),
            (self.grad_clip is None or self.grad_clip > 0, 'grad_clip must be positive or null'),
            (self.num_workers >= 0, 'num_workers must be >= 0'),
            (self.train_num is None or self.train_num >= 1, 'train_num must be >= 1 or null'),
            (self.dataset in SPEAKER_DATASETS or (self.train_speakers is None and self.test_speakers is None),
             f'train_speakers/test_speakers apply to the {SPEAKER_DATASETS} data sets only'),
            (self.torch_threads is None or self.torch_threads >= 1, 'torch_threads must be >= 1 or null'),
            (self.max_batches_per_epoch is None or self.max_batches_per_epoch >= 1,
             'max_batches_per_epoch must be >= 1 or null'),
            (self.max_eval_batches is None or self.max_eval_batches >= 1, 'max_eval_batches must be >= 1 or null'),
            (self.eval_batch_size is None or self.eval_batch_size >= 1, 'eval_batch_size must be >= 1 or null'),
            (self.device == 'auto' or self.device == 'cpu' or self.device.startswith('cuda'),
             f'device must be auto, cpu or cuda[:N], got {self.device!r}'),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        self.preprocess_config()   # fail at load time on a bad preprocessing override
        self.augment_config()      # ... and on a bad augment option

    def augment_config(self):
        """The robustness options (``AugmentConfig``) or ``None`` when ``augment`` is off."""
        if self.augment is None:
            return None
        from .data.augment import AugmentConfig
        try:
            return AugmentConfig.from_dict(self.augment)
        except (TypeError, ValueError) as exc:
            raise ValueError(f'augment: {exc}') from exc

    # ------------------------------------------------------------------------------------------ helpers
    @property
    def peak_lr(self) -> float:
        """The learning rate after warm-up (``lr`` scaled by the batch rule when ``lr_batch_ref`` is set)."""
        return self.lr * (self.batch_size / self.lr_batch_ref if self.lr_batch_ref else 1.0)

    @property
    def micro_batch_size(self) -> int:
        """Samples per forward pass on one rank is this divided by the world size."""
        return self.batch_size // self.grad_accum_steps

    def preprocess_config(self) -> PreprocessConfig:
        """The :class:`PreprocessConfig` this run feeds its model: the data set's preset (paper data sets)
        or the runtime defaults (AV digits), with the recipe's ``preprocessing`` overrides on top."""
        base: dict[str, Any] = {}
        if self.dataset in PAPER_PRESETS:
            from .data.paper_datasets import paper_config
            base = to_dict(paper_config(PAPER_PRESETS[self.dataset]))
        try:
            return PreprocessConfig.from_dict({**base, **self.preprocessing})
        except (TypeError, ValueError) as exc:
            raise ValueError(f'preprocessing: {exc}') from exc

    def resolved_card_name(self) -> str:
        return self.card_name or f'{self.dataset}_{self.model}'

    def replace(self, **changes: Any) -> 'TrainConfig':
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain dict (lists, dicts, scalars) for checkpoints, JSON and YAML."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> 'TrainConfig':
        return from_dict(cls, data)


# ---------------------------------------------------------------------------------------------- loading

def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``['lr=0.01', 'model_args={depth: 2}']`` -> ``{'lr': 0.01, 'model_args': {'depth': 2}}``.

    Values are YAML scalars/flow collections, so ``null``, ``true``, ``[a, b]`` and ``{k: v}`` work.
    Keys are checked later against :class:`TrainConfig`; a malformed item raises ``ValueError`` here.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition('=')
        key = key.strip()
        if not sep or not key:
            raise ValueError(f'override {item!r} is not of the form key=value')
        if key in out:
            raise ValueError(f'override {key!r} given twice')
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ValueError(f'override {item!r}: value is not valid YAML ({exc})') from exc
    return out


def load_recipe(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Recipe YAML (or the defaults when ``path`` is None) with ``overrides`` laid on top, validated."""
    data = load_yaml(path) if path is not None else {}
    try:
        base = TrainConfig.from_dict(data)          # names the bad key of the file itself
    except ValueError as exc:
        raise ValueError(f'{path}: {exc}') from exc
    merged = {**data, **dict(overrides or {})}
    try:
        return TrainConfig.from_dict(merged) if overrides else base
    except ValueError as exc:
        raise ValueError(f'override: {exc}') from exc


def check_resume_compatible(saved: TrainConfig, requested: TrainConfig) -> TrainConfig:
    """The config a resumed run continues with: ``saved``'s structure, ``requested``'s run settings.

    Raises ``ValueError`` naming every structural field that ``requested`` would change, because
    continuing a checkpoint under a different model, data split or batch size is a different experiment.
    """
    changed = [name for name in STRUCTURAL_FIELDS if getattr(saved, name) != getattr(requested, name)]
    if changed:
        details = '; '.join(f'{n}: checkpoint {getattr(saved, n)!r} vs requested {getattr(requested, n)!r}'
                            for n in changed)
        raise ValueError(f'cannot resume: the recipe changes structural field(s) {details}. '
                         'Start a new run (different --out) instead.')
    return requested
