"""What the test suite needs besides the code: the real data and the shipped model, checked once.

Without them most of what the suite claims to test (ROS parity with offline evaluation, replay, fuzzing,
fault injection, split leaks, the shipped model's behaviour) cannot run. A missing or corrupt prerequisite
therefore FAILS the run with the reason, instead of letting those tests skip while the rest passes green.
Users without the data opt out explicitly with ``AV_SNN_ALLOW_MISSING_DATA=1``: the tests that need
the missing part are then skipped (with the reason), and the run says so.

Used by ``tests/conftest.py`` (session check, ``data_root`` fixture), ``tests/runtime_helpers.py``
(``make_card``); ``python tests/prerequisites.py`` prints the status by itself (exit 1 on a problem).
"""
from __future__ import annotations

import os
import sys
import zipfile
from functools import lru_cache
from pathlib import Path

ALLOW_MISSING_ENV = 'AV_SNN_ALLOW_MISSING_DATA'
#: Free Spoken Digit Dataset: 5 speakers x 10 digits x 50 recordings (../shared/data/README.md)
FSDD_RECORDINGS = 2500
#: MNIST arrays in mnist.npz and their shapes (../shared/data/README.md)
MNIST_ARRAYS = {'x_train': (60000, 28, 28), 'y_train': (60000,), 'x_test': (10000, 28, 28), 'y_test': (10000,)}
HOW_TO_FIX_DATA = ('place the real data at ../shared/data (beside the checkout) or set AV_SNN_DATA_ROOT; '
                   f'to run without it, set {ALLOW_MISSING_ENV}=1 (the tests that need it are then skipped)')
HOW_TO_FIX_MODEL = ('restore models/default (git checkout -- models/default, or retrain with '
                    f'scripts/train_default.sh); to run without it, set {ALLOW_MISSING_ENV}=1')


def missing_allowed() -> bool:
    """True when the user opted out of the data/model requirement (``AV_SNN_ALLOW_MISSING_DATA=1``)."""
    return os.environ.get(ALLOW_MISSING_ENV, '').strip().lower() in ('1', 'true', 'yes')


def _npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Array shapes in an ``.npz`` from the member headers only (no 50 MB read)."""
    import numpy as np
    shapes = {}
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            with zf.open(name) as fh:
                version = np.lib.format.read_magic(fh)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, _ = read_header(fh)
                shapes[name.removesuffix('.npy')] = tuple(shape)
    return shapes


def data_problem(root: Path | None) -> str | None:
    """Why the real data at ``root`` is unusable (missing, incomplete, corrupt), or None if it is fine."""
    if root is None:
        return 'real data not found (no ../shared/data beside the checkout and AV_SNN_DATA_ROOT unset)'
    if not root.is_dir():
        return f'real data root {root} does not exist'
    fsdd = root / 'fsdd' / 'recordings'
    wavs = [p for p in fsdd.glob('*.wav')] if fsdd.is_dir() else []
    if len(wavs) != FSDD_RECORDINGS:
        return f'{fsdd}: expected {FSDD_RECORDINGS} FSDD recordings, found {len(wavs)}'
    empty = [p.name for p in wavs if p.stat().st_size <= 44]     # a WAV header alone holds no audio
    if empty:
        return f'{fsdd}: {len(empty)} empty or truncated recording(s), e.g. {empty[0]}'
    mnist = root / 'mnist' / 'mnist.npz'
    if not mnist.is_file():
        return f'{mnist} is missing'
    try:
        shapes = _npz_shapes(mnist)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        return f'{mnist} is corrupt: {exc}'
    for key, shape in MNIST_ARRAYS.items():
        if shapes.get(key) != shape:
            return f'{mnist}: array {key} has shape {shapes.get(key)}, expected {shape}'
    return None


def model_problem(card_path: Path) -> str | None:
    """Why the model card at ``card_path`` is unusable (missing file, hash mismatch, no ONNX), or None."""
    from av_snn_ros.model_card import ModelCard, ModelFileError
    try:
        ModelCard.load(card_path).verified_onnx()
    except (FileNotFoundError, ModelFileError) as exc:
        return f'shipped model unusable: {exc}'
    return None


@lru_cache(maxsize=None)
def status() -> dict[str, tuple[object, str | None]]:
    """``{'data': (root, problem), 'model': (card, problem)}`` for this checkout, computed once."""
    from av_snn_ros.paths import default_data_root, default_model_card
    root = default_data_root()
    card = default_model_card()
    return {'data': (root, data_problem(root)), 'model': (card, model_problem(card))}


def problems() -> list[str]:
    """Every prerequisite problem, each with how to fix it (empty when all is in place)."""
    out = []
    _, data = status()['data']
    if data:
        out.append(f'{data}: {HOW_TO_FIX_DATA}')
    _, model = status()['model']
    if model:
        out.append(f'{model}: {HOW_TO_FIX_MODEL}')
    return out


def require(kind: str):
    """The data root (``kind='data'``) or shipped card path (``'model'``) for a test that needs it.

    Fails the test with the reason when it is missing or corrupt; skips it instead only when the user
    opted out with ``AV_SNN_ALLOW_MISSING_DATA=1``.
    """
    import pytest
    value, problem = status()[kind]
    if problem is None:
        return value
    fix = HOW_TO_FIX_DATA if kind == 'data' else HOW_TO_FIX_MODEL
    if missing_allowed():
        pytest.skip(f'{problem} ({ALLOW_MISSING_ENV}=1)')
    pytest.fail(f'{problem}: {fix}', pytrace=False)


def main() -> int:
    """Print the prerequisite status; exit 1 on a problem unless the opt-out is set."""
    found = problems()
    for kind, (value, problem) in status().items():
        print(f'test prerequisites: {kind}: {value} -> {"OK" if problem is None else problem}')
    if not found:
        return 0
    if missing_allowed():
        print(f'test prerequisites: {ALLOW_MISSING_ENV}=1 is set: the tests that need them will be SKIPPED, '
              'so this run does not test the real data paths or the shipped model', file=sys.stderr)
        return 0
    for line in found:
        print(f'ERROR: {line}', file=sys.stderr)
    return 1


if __name__ == '__main__':
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))    # the checkout's av_snn_ros
    raise SystemExit(main())
