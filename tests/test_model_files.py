"""Bad model files fail loudly at start-up: missing, truncated or tampered weights / ONNX / engines.

A card is written once (MISNet-tiny, real export) and copied per test, so each test damages its own
copy. Loads must fail with :class:`ModelFileError` naming the file and the reason; a checkpoint is only
ever unpickled with ``weights_only=True`` (a pickle carrying arbitrary objects is refused without
running them); the node's configure returns FAILURE with the reason instead of crashing.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from av_snn_ros.model_card import ALLOW_UNHASHED_ENV, ModelCard, ModelFileError, sha256_file

MODEL = 'misnet_tiny'
LABELS = [str(d) for d in range(10)]


@pytest.fixture(scope='module')
def pristine_card(tmp_path_factory) -> Path:
    """A valid card (weights + ONNX + hashes) of the tiny model, written by the real exporter."""
    from av_snn_ros.tools.export import preprocess_config_for, write_model_card
    from av_snn_ros.models.registry import create_model
    torch.manual_seed(0)
    model = create_model(MODEL, num_classes=len(LABELS))
    out = tmp_path_factory.mktemp('card')
    return write_model_card(MODEL, out, LABELS, preprocess_config_for(model), state_dict=model.state_dict())


@pytest.fixture
def card_dir(pristine_card: Path, tmp_path: Path) -> Path:
    """A private copy of the pristine card folder (tests damage it)."""
    dst = tmp_path / 'card'
    shutil.copytree(pristine_card.parent, dst)
    return dst


def _card_data(card_dir: Path) -> dict:
    return yaml.safe_load((card_dir / 'card.yaml').read_text())


def _write_card(card_dir: Path, data: dict) -> None:
    (card_dir / 'card.yaml').write_text(yaml.safe_dump(data, sort_keys=False))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _artefact(card_dir: Path, key: str) -> Path:
    return card_dir / _card_data(card_dir)[key]


# ------------------------------------------------------------------------------------- card level

def test_pristine_card_loads_and_runs(card_dir: Path) -> None:
    card = ModelCard.load(card_dir / 'card.yaml')
    assert card.verified_onnx().is_file()
    model = card.load_torch_model()
    assert not model.training


@pytest.mark.parametrize('damage', ['missing', 'truncated', 'tampered'])
def test_damaged_weights_fail_at_card_load(card_dir: Path, damage: str) -> None:
    weights = _artefact(card_dir, 'weights')
    {'missing': Path.unlink, 'truncated': _truncate, 'tampered': _flip_byte}[damage](weights)
    with pytest.raises(ModelFileError) as info:
        ModelCard.load(card_dir / 'card.yaml')
    text = str(info.value)
    assert str(weights) in text
    assert ('missing' in text) if damage == 'missing' else ('does not match its card' in text)


@pytest.mark.parametrize('damage', ['missing', 'truncated', 'tampered'])
def test_damaged_onnx_fails_verification(card_dir: Path, damage: str) -> None:
    onnx_path = _artefact(card_dir, 'onnx')
    {'missing': Path.unlink, 'truncated': _truncate, 'tampered': _flip_byte}[damage](onnx_path)
    card = ModelCard.load(card_dir / 'card.yaml')          # weights are fine: the card itself loads
    with pytest.raises(ModelFileError, match='model file missing' if damage == 'missing' else 'sha256'):
        card.verified_onnx()
    from av_snn_ros.backends.onnxruntime_backend import create
    with pytest.raises(ModelFileError, match=str(onnx_path.name)):
        create(card)


def test_truncated_onnx_without_hash_is_refused_by_onnxruntime(card_dir: Path, monkeypatch) -> None:
    """Even with the unhashed-model opt-out, a broken graph does not get past start-up."""
    monkeypatch.setenv(ALLOW_UNHASHED_ENV, '1')
    data = _card_data(card_dir)
    data.pop('onnx_sha256')
    _write_card(card_dir, data)
    _truncate(card_dir / data['onnx'])
    from av_snn_ros.backends.onnxruntime_backend import create
    with pytest.raises(ModelFileError, match='onnxruntime cannot load'):
        create(ModelCard.load(card_dir / 'card.yaml'))


def _unhash(card_dir: Path, key: str, how: str) -> Path:
    """Empty (``''``), null or remove the card's ``key``; returns the artefact it hashes."""
    data = _card_data(card_dir)
    if how == 'missing':
        data.pop(key)
    else:
        data[key] = '' if how == 'empty' else None
    _write_card(card_dir, data)
    return card_dir / data['weights' if key == 'weights_sha256' else 'onnx']


@pytest.mark.parametrize('key,how', [('weights_sha256', 'empty'), ('weights_sha256', 'null'),
                                     ('onnx_sha256', 'missing'), ('onnx_sha256', 'empty')])
def test_empty_or_missing_hash_is_refused(card_dir: Path, monkeypatch, key: str, how: str) -> None:
    """A card whose hash is blank used to switch the check off silently; now it names the card and key."""
    monkeypatch.delenv(ALLOW_UNHASHED_ENV, raising=False)
    artefact = _unhash(card_dir, key, how)
    with pytest.raises(ModelFileError) as info:
        ModelCard.load(card_dir / 'card.yaml')
    text = str(info.value)
    assert f'{key} is empty or missing' in text and str(card_dir / 'card.yaml') in text
    assert str(artefact) in text and ALLOW_UNHASHED_ENV in text
    # a card read without verification (preprocessing only) still cannot load the artefact unchecked
    card = ModelCard.load(card_dir / 'card.yaml', verify=False)
    with pytest.raises(ModelFileError, match=f'{key} is empty or missing'):
        card.load_torch_model() if key == 'weights_sha256' else card.verified_onnx()
    if key == 'onnx_sha256':
        from av_snn_ros.backends.onnxruntime_backend import create
        with pytest.raises(ModelFileError, match=f'{key} is empty or missing'):
            create(card)


def test_unhashed_opt_out_loads_with_a_loud_warning(card_dir: Path, monkeypatch, caplog) -> None:
    monkeypatch.setenv(ALLOW_UNHASHED_ENV, '1')
    weights = _unhash(card_dir, 'weights_sha256', 'empty')
    onnx_path = _unhash(card_dir, 'onnx_sha256', 'missing')
    with caplog.at_level('WARNING', logger='av_snn_ros.model_card'):
        card = ModelCard.load(card_dir / 'card.yaml')
        assert card.verified_onnx() == onnx_path
        assert not card.load_torch_model().training
    warned = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
    assert any(str(weights) in w and 'WITHOUT a hash check' in w and ALLOW_UNHASHED_ENV in w for w in warned)
    assert any(str(onnx_path) in w and 'onnx_sha256' in w for w in warned)


def test_an_onnx_the_card_does_not_list_is_refused(card_dir: Path, tmp_path: Path, monkeypatch, caplog) -> None:
    """TensorRT's ``model_file_path`` names an ONNX besides the card's: only the card's (hash-checked)
    export, or any file under the development opt-out."""
    monkeypatch.delenv(ALLOW_UNHASHED_ENV, raising=False)
    card = ModelCard.load(card_dir / 'card.yaml')
    other = tmp_path / 'other.onnx'
    shutil.copy(card.onnx, other)                      # the same bytes, but nothing vouches for this path
    with pytest.raises(ModelFileError, match='is not the ONNX export .* lists and hashes'):
        card.verified_onnx(other)
    same = card_dir / '..' / card_dir.name / card.onnx.name      # the card's own file, spelled differently
    assert card.verified_onnx(same) == card.onnx
    _flip_byte(card.onnx)
    with pytest.raises(ModelFileError, match='does not match its card'):
        card.verified_onnx(same)
    monkeypatch.setenv(ALLOW_UNHASHED_ENV, '1')
    with caplog.at_level('WARNING', logger='av_snn_ros.model_card'):
        assert card.verified_onnx(other) == other
    assert any(str(other) in r.getMessage() and 'WITHOUT a hash check' in r.getMessage() for r in caplog.records)


def test_unverified_card_load_still_checks_the_weights_it_loads(card_dir: Path) -> None:
    """``verify=False`` (used to read a card's preprocessing) never lets other weights into the model."""
    from av_snn_ros.models.registry import create_model
    card = ModelCard.load(card_dir / 'card.yaml', verify=False)
    torch.manual_seed(1)
    torch.save(create_model(MODEL, num_classes=len(LABELS)).state_dict(), card.weights)   # valid, not hashed
    with pytest.raises(ModelFileError, match='does not match its card'):
        card.load_torch_model()


def test_shipped_cards_carry_every_hash_and_load() -> None:
    from av_snn_ros.paths import share_dir
    cards = sorted((share_dir() / 'models').glob('**/card.yaml'))
    assert cards, 'no shipped model card found'
    for path in cards:
        data = yaml.safe_load(path.read_text())
        assert data['weights_sha256'] and (data.get('onnx_sha256') or 'onnx' not in data), path
        card = ModelCard.load(path)
        if card.onnx is not None:
            card.verified_onnx()
        assert not card.load_torch_model().training


def test_card_hash_mismatch_names_both_hashes(card_dir: Path) -> None:
    data = _card_data(card_dir)
    data['weights_sha256'] = '0' * 64
    _write_card(card_dir, data)
    with pytest.raises(ModelFileError, match=r'sha256 [0-9a-f]{12}… != 000000000000…'):
        ModelCard.load(card_dir / 'card.yaml')


def test_truncated_weights_with_matching_hash_fail_to_load(card_dir: Path) -> None:
    """A card rewritten to match a truncated file: the hash passes, torch's archive reader does not."""
    weights = _artefact(card_dir, 'weights')
    _truncate(weights)
    data = _card_data(card_dir)
    data['weights_sha256'] = sha256_file(weights)
    _write_card(card_dir, data)
    card = ModelCard.load(card_dir / 'card.yaml')
    with pytest.raises(ModelFileError, match='cannot load weights'):
        card.load_torch_model()


class _Payload:
    """An object whose unpickling would create a marker file (stands in for arbitrary code)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_checkpoint_with_arbitrary_objects_is_refused(card_dir: Path, tmp_path: Path) -> None:
    """An attacker who replaces the weights *and* the card hash still cannot run code: weights_only."""
    weights = _artefact(card_dir, 'weights')
    marker = tmp_path / 'payload-ran'
    state = torch.load(weights, weights_only=True)
    state['evil'] = _Payload(str(marker))
    torch.save(state, weights)
    data = _card_data(card_dir)
    data['weights_sha256'] = sha256_file(weights)
    _write_card(card_dir, data)
    card = ModelCard.load(card_dir / 'card.yaml')           # the hash matches the new file
    with pytest.raises(ModelFileError, match='cannot load weights'):
        card.load_torch_model()
    assert not marker.exists(), 'the pickled payload was executed'
    # the payload is live: an unrestricted unpickler runs it (so the refusal above is what saved us)
    torch.load(weights, weights_only=False)
    assert marker.exists()


def test_weights_for_another_model_are_refused(card_dir: Path) -> None:
    data = _card_data(card_dir)
    data['model_args'] = {'width': 0.5}                   # different channel counts than the weights
    _write_card(card_dir, data)
    with pytest.raises(ModelFileError, match='do not fit model'):
        ModelCard.load(card_dir / 'card.yaml').load_torch_model()


@pytest.mark.parametrize('edit', ['unknown_model', 'no_labels', 'bad_yaml', 'unknown_key'])
def test_broken_card_is_a_clear_error(card_dir: Path, edit: str) -> None:
    data = _card_data(card_dir)
    if edit == 'bad_yaml':
        (card_dir / 'card.yaml').write_text('name: [unclosed\n')
    else:
        if edit == 'unknown_model':
            data['model'] = 'no_such_model'
        elif edit == 'no_labels':
            data['labels'] = []
        else:
            data['weigths'] = 'model.pt'
        _write_card(card_dir, data)
    expected = {'unknown_model': "unknown model 'no_such_model'", 'no_labels': 'labels must be a non-empty list',
                'bad_yaml': 'cannot read model card', 'unknown_key': 'unknown model card key(s): weigths'}[edit]
    from av_snn_ros.backends.torch_backend import create
    with pytest.raises(ModelFileError) as info:
        create(ModelCard.load(card_dir / 'card.yaml'))
    assert expected in str(info.value)
    assert 'card.yaml' in str(info.value)


# ---------------------------------------------------------------------------------- engine cache

def _engine_key(onnx_sha256: str):
    from av_snn_ros.backends.engine_cache import EngineKey
    return EngineKey(onnx_sha256=onnx_sha256, trt_version='10.0', gpu_name='test-gpu',
                     compute_capability='8.7', precision='fp16')


@pytest.mark.parametrize('damage', ['truncated', 'tampered', 'empty', 'no_sidecar'])
def test_damaged_engine_is_rebuilt_not_loaded(tmp_path: Path, damage: str) -> None:
    """A cached TensorRT engine that does not match its sidecar is a miss (rebuilt), never loaded."""
    from av_snn_ros.backends.engine_cache import EngineCache, metadata_path
    cache = EngineCache(tmp_path)
    key = _engine_key('a' * 64)
    built: list[int] = []

    def builder() -> bytes:
        built.append(1)
        return b'serialized-engine-' * 64

    first = cache.get_or_build(key, builder)
    assert not first.hit and built == [1]
    path = first.path
    if damage == 'truncated':
        _truncate(path)
    elif damage == 'tampered':
        _flip_byte(path)
    elif damage == 'empty':
        path.write_bytes(b'')
    else:
        metadata_path(path).unlink()
    assert cache.lookup(key) is None
    again = cache.get_or_build(key, builder)
    assert not again.hit and built == [1, 1]
    assert again.reason                                   # says why it rebuilt
    assert cache.get_or_build(key, builder).hit           # and the rebuilt engine is then reused


def test_tensorrt_pinned_without_gpu_is_a_clear_error(card_dir: Path) -> None:
    from av_snn_ros.backends.base import BackendUnavailable, create_backend
    try:
        import tensorrt  # noqa: F401
        pytest.skip('TensorRT is installed here; this checks the CPU-only message')
    except ImportError:
        pass
    with pytest.raises(BackendUnavailable) as info:
        create_backend('tensorrt', ModelCard.load(card_dir / 'card.yaml'))
    assert 'tensorrt' in str(info.value).lower()


# ------------------------------------------------------------------------------------------ node

def _node(context, card_path, backend: str):
    from rclpy.parameter import Parameter

    from av_snn_ros.ros.classifier_node import AvClassifierNode
    return AvClassifierNode(context=context, parameter_overrides=[
        Parameter('model.card', value=str(card_path)), Parameter('backend.name', value=backend),
        Parameter('backend.threads', value=1)])


@pytest.mark.parametrize('damage,backend,expected', [
    ('tampered_weights', 'torch', 'does not match its card'),
    ('truncated_onnx', 'onnxruntime', 'does not match its card'),
    ('missing_card', 'torch', 'cannot read model card'),
    ('pickled_payload', 'torch', 'cannot load weights'),
])
def test_node_configure_fails_with_the_reason(ros_context, card_dir: Path, tmp_path: Path, capfd,
                                              damage: str, backend: str, expected: str) -> None:
    from rclpy.lifecycle import TransitionCallbackReturn
    card_path = card_dir / 'card.yaml'
    if damage == 'tampered_weights':
        _flip_byte(_artefact(card_dir, 'weights'))
    elif damage == 'truncated_onnx':
        _truncate(_artefact(card_dir, 'onnx'))
    elif damage == 'missing_card':
        card_path = card_dir / 'no_such_card.yaml'
    else:
        weights = _artefact(card_dir, 'weights')
        state = torch.load(weights, weights_only=True)
        state['evil'] = _Payload(str(tmp_path / 'payload-ran'))
        torch.save(state, weights)
        data = _card_data(card_dir)
        data['weights_sha256'] = sha256_file(weights)
        _write_card(card_dir, data)
    node = _node(ros_context, card_path, backend)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node.card is None and node.choice is None           # nothing half-loaded stays behind
    finally:
        node.destroy_node()
    err = capfd.readouterr().err
    assert 'configure failed' in err and expected in err, err
    assert not (tmp_path / 'payload-ran').exists()


def test_node_auto_backend_refuses_a_tampered_onnx(ros_context, card_dir: Path, capfd) -> None:
    """``auto`` falls back past unavailable runtimes, never past a damaged model file: configure fails."""
    from rclpy.lifecycle import TransitionCallbackReturn
    onnx_path = _artefact(card_dir, 'onnx')
    _flip_byte(onnx_path)
    node = _node(ros_context, card_dir / 'card.yaml', 'auto')
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node.choice is None
    finally:
        node.destroy_node()
    err = capfd.readouterr().err
    assert 'configure failed' in err and 'does not match its card' in err and onnx_path.name in err
