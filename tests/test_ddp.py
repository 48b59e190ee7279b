"""``av-snn train`` under torchrun (2 CPU ranks, gloo) trains exactly like one process.

Design (see training/av_snn_training/distributed.py): ``batch_size`` is the global batch and BatchNorm
normalises per micro-batch. Two ranks with per-rank batch B/2 therefore compute the same update as one
process accumulating two interleaved micro-batches of B/2 (``grad_accum_steps=2``): same samples per
micro-batch, same BatchNorm statistics, gradients averaged the same way. The parameters must agree to
float tolerance. BatchNorm *running* statistics legitimately differ (DDP keeps rank 0's, accumulation
updates them once per micro-batch), so they are not compared.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from av_snn_training.recipe import TrainConfig
from av_snn_training.trainer import LAST_CHECKPOINT, load_checkpoint, train

REPO = Path(__file__).resolve().parent.parent
TORCHRUN_TIMEOUT_S = 300
RECIPE = dict(model='misnet_tiny', model_args={'width': 0.125, 'cells': [1, 1, 0]}, dataset='av_digits',
              epochs=2, batch_size=8, train_num=24, max_batches_per_epoch=3, max_eval_batches=1,
              eval_batch_size=8, optimizer='sgd', lr=0.05, lr_min=0.001, torch_threads=1, seed=5,
              device='cpu')   # gloo on CPU ranks, also on a machine with one GPU


def test_two_gloo_ranks_match_one_process_with_accumulation(data_root, tmp_path):
    ddp_out, single_out = tmp_path / 'ddp', tmp_path / 'single'
    recipe = tmp_path / 'recipe.yaml'
    recipe.write_text(yaml.safe_dump({**RECIPE, 'out_dir': str(ddp_out)}))
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [str(REPO), str(REPO / 'training'),
                                                                     os.environ.get('PYTHONPATH')])),
           'OMP_NUM_THREADS': '1'}
    # Both runs stop after epoch 1 of 2: the comparison needs the trained weights, not the final export.
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
           '-m', 'av_snn_ros.cli', 'train', '--recipe', str(recipe), '--data-root', str(data_root),
           '--stop-after-epochs', '1']
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=TORCHRUN_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'cpu x 2' in proc.stdout          # the run really was distributed (rank 0's log line)

    single = TrainConfig.from_dict({**RECIPE, 'out_dir': str(single_out), 'grad_accum_steps': 2})
    train(single, data_root=data_root, stop_after_epochs=1)

    ddp, ref = load_checkpoint(ddp_out / LAST_CHECKPOINT), load_checkpoint(single_out / LAST_CHECKPOINT)
    assert ddp['world_size'] == 2 and len(ddp['rng']) == 2 and ref['world_size'] == 1
    params = [name for name, _ in _named_parameters(ddp['config'])]
    assert params, 'no parameters to compare'
    for name in params:
        torch.testing.assert_close(ddp['model'][name], ref['model'][name], rtol=1e-5, atol=1e-6, msg=name)
    changed = [n for n in params if not torch.equal(ddp['model'][n], _initial(ddp['config'])[n])]
    assert len(changed) > len(params) // 2, 'training did not move the weights'
    train_ddp = ddp['history'][0]
    train_ref = ref['history'][0]
    assert train_ddp['train_loss'] == pytest.approx(train_ref['train_loss'], rel=1e-5)
    assert train_ddp['train_accuracy'] == train_ref['train_accuracy']
    # Only rank 0 writes: one checkpoint pair, no per-rank files.
    assert sorted(p.name for p in ddp_out.iterdir()) == ['best.pt', 'last.pt']


def _named_parameters(config: dict):
    from av_snn_training.trainer import build_model
    return build_model(TrainConfig.from_dict(config), 10).named_parameters()


def _initial(config: dict) -> dict[str, torch.Tensor]:
    from av_snn_training.trainer import build_model, seed_everything
    cfg = TrainConfig.from_dict(config)
    seed_everything(cfg.seed)
    return dict(build_model(cfg, 10).named_parameters())


def test_more_ranks_than_gpus_is_a_clear_error(monkeypatch):
    """torchrun --nproc_per_node=2 on a one-GPU machine: rank 1 must not die in CUDA with 'invalid ordinal'."""
    from av_snn_training.distributed import resolve_device
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    assert resolve_device('auto', local_rank=0) == torch.device('cuda:0')
    with pytest.raises(ValueError, match=r'cuda:1 does not exist \(LOCAL_RANK 1, 1 CUDA device'):
        resolve_device('auto', local_rank=1)
    with pytest.raises(ValueError, match='cuda:3 does not exist'):
        resolve_device('cuda:3')
