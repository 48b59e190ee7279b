"""Data-parallel plumbing for ``av-snn train`` under ``torchrun`` (DistributedDataParallel).

The same command runs single-process or distributed: ``torchrun --nproc_per_node=N -m av_snn_ros.cli train
...`` sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` and :func:`init_distributed` picks them up (gloo on CPU,
nccl on CUDA). Only rank 0 logs, evaluates, writes checkpoints, plots and model cards; the others wait at
a barrier.

Batch semantics (what makes a run reproducible across world sizes): ``batch_size`` is the GLOBAL batch.
Each optimiser step consumes the same ``batch_size`` samples whatever the world size (a seeded
``DistributedSampler`` interleaves one permutation over the ranks), split into ``world_size x
grad_accum_steps`` micro-batches. Gradients are averaged over all micro-batches, so the update equals
the full-batch update. BatchNorm normalises each micro-batch with its own statistics (standard DDP
behaviour; ``SyncBatchNorm`` is GPU-only in PyTorch and would not reach BatchNorms inside multi-step
spiking layers), so N ranks x 1 micro-batch trains exactly like 1 rank x N accumulated micro-batches
(tests/test_ddp.py checks this).
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

# Generous: rank 0 evaluates and writes files while the other ranks wait at a barrier.
BARRIER_TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device('cpu')

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; explicit names are checked."""
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    if name.startswith('cuda'):
        if not torch.cuda.is_available():
            raise ValueError(f'device {name!r} requested but CUDA is not available')
        device = torch.device(name if ':' in name else f'cuda:{local_rank}')
        count = torch.cuda.device_count()
        if device.index >= count:
            # e.g. torchrun --nproc_per_node=2 on a one-GPU machine: one rank per GPU
            raise ValueError(f'{device} does not exist (LOCAL_RANK {local_rank}, {count} CUDA device(s)): start at '
                             f'most {count} rank(s) per node, or train on the CPU with device: cpu')
        return device
    return torch.device(name)


def init_distributed(device: str = 'auto') -> DistContext:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1), else a single-process context."""
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    if world_size <= 1:
        return DistContext(device=resolve_device(device))
    rank, local_rank = int(os.environ['RANK']), int(os.environ.get('LOCAL_RANK', '0'))
    dev = resolve_device(device, local_rank)
    if not dist.is_initialized():
        if dev.type == 'cuda':
            torch.cuda.set_device(dev)
        dist.init_process_group(backend='nccl' if dev.type == 'cuda' else 'gloo', timeout=BARRIER_TIMEOUT)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup(ctx: DistContext) -> None:
    """Leave the process group (no-op for single-process runs)."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_sum(values: list[float], ctx: DistContext) -> list[float]:
    """Sum a few scalars over all ranks (training-loss and accuracy bookkeeping)."""
    if not ctx.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64,
                     device=ctx.device if ctx.device.type == 'cuda' else 'cpu')
    dist.all_reduce(t)
    return t.tolist()


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj`` as a list indexed by rank (used for per-rank RNG states in checkpoints)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class TrainForward(torch.nn.Module):
    """Exposes ``model.forward_train`` as ``forward`` so DDP's forward hooks (gradient sync) see it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> dict:
        return self.model.forward_train(audio, visual)


def wrap_for_training(model: torch.nn.Module, ctx: DistContext,
                      find_unused_parameters: bool = False) -> torch.nn.Module:
    """The module whose ``forward(audio, visual)`` returns the training dict; DDP-wrapped when distributed."""
    step = TrainForward(model)
    if not ctx.distributed:
        return step
    from torch.nn.parallel import DistributedDataParallel
    ids = [ctx.device.index] if ctx.device.type == 'cuda' else None
    return DistributedDataParallel(step, device_ids=ids, find_unused_parameters=find_unused_parameters)
