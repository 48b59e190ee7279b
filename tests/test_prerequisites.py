"""The suite's prerequisites: missing or corrupt data or shipped model fail the run with the reason,
unless the user opts out with AV_SNN_ALLOW_MISSING_DATA=1 (then the tests needing them skip)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

import prerequisites
from conftest import REPO_ROOT


def _fake_data(root: Path, recordings: int = prerequisites.FSDD_RECORDINGS) -> Path:
    """A data root with the right layout: tiny WAVs and an mnist.npz of the right shapes (zeros)."""
    fsdd = root / 'fsdd' / 'recordings'
    fsdd.mkdir(parents=True)
    for i in range(recordings):
        with wave.open(str(fsdd / f'{i % 10}_spk_{i}.wav'), 'wb') as wf:
            wf.setnchannels(1)
            wf.setsampwidth(2)
            wf.setframerate(8000)
            wf.writeframes(b'\0\0' * 10)
    (root / 'mnist').mkdir()
    np.savez(root / 'mnist' / 'mnist.npz', **{k: np.zeros(s, np.uint8) for k, s in prerequisites.MNIST_ARRAYS.items()})
    return root


def test_data_problems_are_named(tmp_path):
    assert 'not found' in prerequisites.data_problem(None)
    assert 'does not exist' in prerequisites.data_problem(tmp_path / 'nowhere')
    root = _fake_data(tmp_path / 'ok')
    assert prerequisites.data_problem(root) is None
    (root / 'fsdd' / 'recordings' / '0_spk_0.wav').write_bytes(b'RIFF')
    assert 'truncated recording(s), e.g. 0_spk_0.wav' in prerequisites.data_problem(root)
    (root / 'fsdd' / 'recordings' / '0_spk_0.wav').unlink()
    assert 'expected 2500 FSDD recordings, found 2499' in prerequisites.data_problem(root)

    root = _fake_data(tmp_path / 'bad_mnist')
    mnist = root / 'mnist' / 'mnist.npz'
    mnist.write_bytes(mnist.read_bytes()[:1000])                      # truncated download
    assert 'mnist.npz is corrupt' in prerequisites.data_problem(root)
    np.savez(mnist, x_train=np.zeros((5, 28, 28), np.uint8))
    assert 'x_train has shape (5, 28, 28), expected (60000, 28, 28)' in prerequisites.data_problem(root)


def test_the_real_data_and_shipped_model_pass(data_root, shipped_card):
    assert prerequisites.data_problem(data_root) is None
    assert prerequisites.model_problem(shipped_card) is None


def test_model_problems_are_named(tmp_path, shipped_card):
    card = tmp_path / 'card'
    shutil.copytree(shipped_card.parent, card)
    weights = card / 'model.pt'
    weights.write_bytes(weights.read_bytes()[:-10])                   # truncated
    assert 'does not match its card' in prerequisites.model_problem(card / 'card.yaml')
    weights.unlink()
    assert 'model file missing' in prerequisites.model_problem(card / 'card.yaml')
    shutil.copy2(shipped_card.parent / 'model.pt', weights)
    (card / 'model.onnx').unlink()
    assert 'model.onnx' in prerequisites.model_problem(card / 'card.yaml')


def _pytest(env_changes: dict[str, str], *tests: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != prerequisites.ALLOW_MISSING_ENV}
    env.update(env_changes)
    return subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', *tests],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_missing_data_fails_the_run_and_the_opt_out_skips(tmp_path):
    """Without the data a test that needs it errors with the reason, and the run fails even though the
    data-free test passed; with the opt-out the same run passes and the data test is skipped."""
    tests = ('tests/test_energy.py::test_report_needs_a_forward_pass',
             'tests/test_energy.py::test_misnet_tiny_energy_on_a_real_window')
    missing = str(tmp_path / 'no_data')
    strict = _pytest({'AV_SNN_DATA_ROOT': missing}, *tests)
    out = strict.stdout + strict.stderr
    assert strict.returncode == 1, out
    assert f'real data root {missing} does not exist' in out and '1 passed, 1 error' in out
    assert 'AV_SNN_ALLOW_MISSING_DATA=1' in out and 'this run FAILS' in out
    relaxed = _pytest({'AV_SNN_DATA_ROOT': missing, prerequisites.ALLOW_MISSING_ENV: '1'}, *tests)
    out = relaxed.stdout + relaxed.stderr
    assert relaxed.returncode == 0, out
    assert '1 passed, 1 skipped' in out and 'SKIPPED' in out


def test_ci_precheck_prints_the_reason(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != prerequisites.ALLOW_MISSING_ENV}
    env['AV_SNN_DATA_ROOT'] = str(tmp_path / 'no_data')
    script = REPO_ROOT / 'tests' / 'prerequisites.py'
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and 'ERROR: real data root' in proc.stderr
    assert 'AV_SNN_ALLOW_MISSING_DATA' in proc.stderr
    env[prerequisites.ALLOW_MISSING_ENV] = '1'
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and 'will be SKIPPED' in proc.stderr
