"""AV digits (FSDD + MNIST) on the real data: splits, pairing, preprocessing contract, noisy protocol."""
from __future__ import annotations

import shutil
import struct
import wave

import numpy as np
import pytest

from av_snn_ros.preprocessing import PreprocessConfig, fit_length, preprocess_window, resample
from av_snn_training.data import av_digits
from av_snn_training.data.av_digits import (DEFAULT_TEST_SPEAKERS, LABELS, PROTOCOLS, SPEAKERS, AVDigits,
                                            RawSample)
from av_snn_training.data.corruptions import FULL_SCALE
from av_snn_training.data.wav import read_wav, write_wav


@pytest.fixture(scope='module')
def mnist(data_root):
    return av_digits.load_mnist(data_root)


def test_constants():
    assert LABELS == tuple('0123456789')
    assert set(DEFAULT_TEST_SPEAKERS) < set(SPEAKERS)


def test_speaker_split_has_no_leak(data_root, mnist):
    train, val, test = (AVDigits(data_root, s) for s in ('train', 'val', 'test'))
    assert set(train.speakers) == set(SPEAKERS) - set(DEFAULT_TEST_SPEAKERS) == set(val.speakers)
    assert set(test.speakers) == set(DEFAULT_TEST_SPEAKERS)
    assert {r.speaker for r in train.recordings}.isdisjoint({r.speaker for r in test.recordings})
    files = [{r.path.name for r in d.recordings} for d in (train, val, test)]
    assert len(files[0]) + len(files[1]) + len(files[2]) == 2500 == len(set.union(*files))
    assert len(val) == 200 and len(test) == 500      # 10 % of each (speaker, digit) group of 4 speakers
    # Images: train/val pairs from x_train (disjoint pools), test from x_test; labels agree everywhere.
    assert set(train.image_indices).isdisjoint(val.image_indices)
    assert train.image_source == val.image_source == 'x_train' and test.image_source == 'x_test'
    for ds, ys in ((train, mnist['y_train']), (val, mnist['y_train']), (test, mnist['y_test'])):
        assert (ys[list(ds.image_indices)] == np.array(ds.labels)).all()
        assert all(int(r.path.name[0]) == r.digit for r in ds.recordings)
    raw = test.raw(3)
    assert np.array_equal(raw.image, mnist['x_test'][raw.image_index])
    assert raw.label == mnist['y_test'][raw.image_index] == int(raw.audio_file[0])


def test_val_is_disjoint_from_train_for_any_seeds(data_root):
    val_ds, train_ds = AVDigits(data_root, 'val', seed=0), AVDigits(data_root, 'train', seed=7)
    val = {r.path.name for r in val_ds.recordings}
    train = {r.path.name for r in train_ds.recordings}
    assert val and val.isdisjoint(train)
    assert set(val_ds.image_indices).isdisjoint(train_ds.image_indices)   # re-pairing never leaks val images


def test_pairing_is_deterministic_by_seed(data_root):
    a, b = AVDigits(data_root, 'test', seed=0), AVDigits(data_root, 'test', seed=0)
    c = AVDigits(data_root, 'test', seed=1)
    assert a.recordings == b.recordings and a.image_indices == b.image_indices
    pairs = lambda d: dict(zip((r.path.name for r in d.recordings), d.image_indices))  # noqa: E731
    assert pairs(a) != pairs(c)
    assert np.mean([pairs(a)[k] != pairs(c)[k] for k in pairs(a)]) > 0.9


def test_num_takes_a_stable_prefix(data_root):
    small, large = AVDigits(data_root, 'train', num=5), AVDigits(data_root, 'train', num=40)
    full = AVDigits(data_root, 'train')
    assert len(small) == 5 and small.recordings == large.recordings[:5] == full.recordings[:5]
    assert small.image_indices == full.image_indices[:5]
    # the seeded shuffle mixes speakers and digits rather than taking the first files
    assert len(set(large.labels)) > 3 and len({r.speaker for r in large.recordings}) > 1


def test_raw_sample_and_getitem_contract(data_root):
    cfg = PreprocessConfig()
    ds = AVDigits(data_root, 'test', cfg, num=4)
    raw = ds.raw(1)
    assert isinstance(raw, RawSample)
    assert raw.audio.dtype == np.float32 and raw.audio.shape == (cfg.window_samples,)
    assert raw.image.dtype == np.uint8 and raw.image.shape == (28, 28)
    # the utterance is centred: reproduce it from the file independently
    native, rate = read_wav(ds.recordings[1].path)
    assert rate == 8000
    expected = fit_length(resample(native, rate, cfg.sample_rate), cfg.window_samples)
    np.testing.assert_array_equal(raw.audio, expected)
    audio, visual, label = ds[1]
    ref_a, ref_v = preprocess_window(raw.audio, [raw.image] * cfg.timesteps, cfg)
    assert label == raw.label
    assert tuple(audio.shape) == (cfg.timesteps, 1, *cfg.audio_size)
    assert tuple(visual.shape) == (cfg.timesteps, cfg.image_channels, *cfg.image_size)
    np.testing.assert_array_equal(audio.numpy(), ref_a)
    np.testing.assert_array_equal(visual.numpy(), ref_v)
    assert ds[-1][2] == ds.labels[-1]
    with pytest.raises(IndexError):
        ds.raw(4)


def test_long_recording_is_cropped_centred(data_root):
    cfg = PreprocessConfig()
    long_files = [r for r in av_digits.scan_recordings(data_root)
                  if r.path.stat().st_size > 2 * cfg.window_s * 8000 + 100]   # > 1 s of 8 kHz S16
    assert long_files, 'FSDD has a few recordings longer than one second'
    rec = long_files[0]
    ds = AVDigits(data_root, 'test', speakers=[rec.speaker])
    i = [r.path.name for r in ds.recordings].index(rec.path.name)
    native, rate = read_wav(rec.path)
    full = resample(native, rate, cfg.sample_rate)
    start = (len(full) - cfg.window_samples) // 2
    np.testing.assert_array_equal(ds.raw(i).audio, full[start:start + cfg.window_samples])


def test_other_preprocess_config(data_root):
    cfg = PreprocessConfig(sample_rate=8000, f_max=4000.0, hop_length=50, timesteps=8, image_size=(28, 28))
    ds = AVDigits(data_root, 'val', cfg, num=2)
    assert ds.raw(0).audio.shape == (8000,)
    audio, visual, _ = ds[0]
    assert tuple(audio.shape) == (8, 1, 32, 32) and tuple(visual.shape) == (8, 1, 28, 28)


def test_noisy_protocol_changes_signals_at_documented_snr(data_root):
    params = PROTOCOLS['noisy']
    clean = AVDigits(data_root, 'test', num=12)
    noisy = AVDigits(data_root, 'test', protocol='noisy', num=12)
    measured = []
    for i in range(len(clean)):
        c, n = clean.raw(i), noisy.raw(i)
        assert (c.label, c.audio_file, c.image_index) == (n.label, n.audio_file, n.image_index)
        assert not np.array_equal(c.image, n.image)
        assert np.abs(n.image.astype(int) - c.image.astype(int)).mean() > 10
        if np.abs(n.audio).max() >= FULL_SCALE - 1e-6:
            continue   # the mixture was scaled down to avoid clipping: SNR kept, difference not additive
        native, rate = read_wav(clean.recordings[i].path)
        utterance = resample(native, rate, clean.cfg.sample_rate)
        start = max(0, (len(utterance) - clean.cfg.window_samples) // 2)   # centred crop of long files
        power = np.mean(utterance[start:start + clean.cfg.window_samples].astype(np.float64) ** 2)
        noise_power = np.mean((n.audio.astype(np.float64) - c.audio) ** 2)
        measured.append(10 * np.log10(power / noise_power))
    assert len(measured) >= 6
    np.testing.assert_allclose(measured, params.audio.snr_db, atol=0.05)


def test_noisy_protocol_is_reproducible_per_sample(data_root):
    a = AVDigits(data_root, 'train', protocol='noisy', num=3)
    b = AVDigits(data_root, 'train', protocol='noisy', num=30)
    other_seed = AVDigits(data_root, 'train', protocol='noisy', seed=1)
    for i in range(3):
        ra, rb = a.raw(i), b.raw(i)
        np.testing.assert_array_equal(ra.audio, rb.audio)
        np.testing.assert_array_equal(ra.image, rb.image)
        np.testing.assert_array_equal(ra.audio, a.raw(i).audio)
        # another seed: the same file gets other noise (and another image)
        j = [r.path.name for r in other_seed.recordings].index(ra.audio_file)
        ro = other_seed.raw(j)
        assert ro.label == ra.label and not np.array_equal(ro.audio, ra.audio)
    assert [r.path.name for r in a.recordings] != [r.path.name for r in other_seed.recordings[:3]]
    # training epochs redraw the noise (augmentation); epoch 0 is the fixed evaluation protocol
    first = a.raw(0)
    a.set_epoch(2)
    redrawn = a.raw(0)
    assert redrawn.image_index == first.image_index and not np.array_equal(redrawn.audio, first.audio)
    a.set_epoch(0)
    np.testing.assert_array_equal(a.raw(0).image, first.image)


def _copy_subset(data_root, dest, mnist, rename: dict[str, str], per_digit: int = 2) -> None:
    """A small copy of the data set: ``per_digit`` files per digit per speaker, speakers renamed."""
    rec_dir = dest / 'fsdd' / 'recordings'
    rec_dir.mkdir(parents=True)
    for r in av_digits.scan_recordings(data_root):
        if r.speaker in rename and r.index < per_digit:
            shutil.copy(r.path, rec_dir / f'{r.digit}_{rename[r.speaker]}_{r.index}.wav')
    (dest / 'mnist').mkdir()
    np.savez(dest / 'mnist' / 'mnist.npz', x_train=mnist['x_train'][:600], y_train=mnist['y_train'][:600],
             x_test=mnist['x_test'][:300], y_test=mnist['y_test'][:300])


def test_copied_folder_with_unseen_speaker(data_root, mnist, tmp_path):
    _copy_subset(data_root, tmp_path, mnist, {'george': 'ada_lovelace', 'theo': 'theo'})
    test = AVDigits(tmp_path, 'test', speakers=['ada_lovelace'])
    assert test.speakers == ('ada_lovelace',) and len(test) == 20
    assert sorted(test.labels) == sorted(list(range(10)) * 2)
    sample = test.raw(0)
    assert sample.speaker == 'ada_lovelace' and sample.label == int(sample.audio_file[0])
    assert test[0][0].shape[0] == PreprocessConfig().timesteps
    # default split: 'theo' is present, so it is the test speaker and the new speaker trains
    assert AVDigits(tmp_path, 'train').speakers == ('ada_lovelace',)
    assert AVDigits(tmp_path, 'test').speakers == ('theo',)


def test_folder_without_default_test_speaker_needs_explicit_speakers(data_root, mnist, tmp_path):
    _copy_subset(data_root, tmp_path, mnist, {'george': 'alice', 'jackson': 'bob'}, per_digit=1)
    with pytest.raises(ValueError, match='pass speakers='):
        AVDigits(tmp_path, 'test')
    assert len(AVDigits(tmp_path, 'test', speakers=['bob'])) == 10
    with pytest.raises(ValueError, match=r"\['alice', 'bob'\]"):
        AVDigits(tmp_path, 'test', speakers=['carol'])


def test_layout_errors(data_root, mnist, tmp_path):
    with pytest.raises(FileNotFoundError, match='fsdd/recordings'):
        AVDigits(tmp_path)
    _copy_subset(data_root, tmp_path, mnist, {'george': 'george', 'theo': 'theo'}, per_digit=1)
    (tmp_path / 'mnist' / 'mnist.npz').unlink()
    with pytest.raises(FileNotFoundError, match='mnist.npz'):
        AVDigits(tmp_path)
    np.savez(tmp_path / 'mnist' / 'mnist.npz', x_train=mnist['x_train'][:10])
    with pytest.raises(ValueError, match='missing array'):
        AVDigits(tmp_path)
    np.savez(tmp_path / 'mnist' / 'mnist.npz', x_train=mnist['x_train'][:600], y_train=mnist['y_train'][:600],
             x_test=mnist['x_test'][:300], y_test=mnist['y_test'][:300])
    bad = tmp_path / 'fsdd' / 'recordings' / 'hello.wav'
    bad.write_bytes(b'RIFF')
    with pytest.raises(ValueError, match='hello.wav.*does not match'):
        AVDigits(tmp_path)
    bad.unlink()
    broken = tmp_path / 'fsdd' / 'recordings' / '3_george_99.wav'
    broken.write_bytes(b'RIFF\x00\x00\x00\x00WAVEjunk')
    with pytest.raises(ValueError, match='3_george_99.wav'):
        AVDigits(tmp_path, 'test', speakers=['george'])
    with pytest.raises(ValueError, match='unknown split'):
        AVDigits(data_root, 'dev')
    with pytest.raises(ValueError, match='unknown protocol'):
        AVDigits(data_root, protocol='foggy')
    with pytest.raises(ValueError, match='num=501 exceeds'):
        AVDigits(data_root, 'test', num=501)
    with pytest.raises(TypeError):
        AVDigits(data_root, 'test', speakers='theo')


def test_wav_reader_formats(tmp_path):
    tone = (0.5 * np.sin(np.linspace(0, 40 * np.pi, 800))).astype(np.float32)
    write_wav(tmp_path / 's16.wav', tone, 8000)
    audio, rate = read_wav(tmp_path / 's16.wav')
    assert rate == 8000 and audio.dtype == np.float32
    np.testing.assert_allclose(audio, tone, atol=1 / 32767)
    for width in (1, 3, 4):   # 8-bit unsigned, 24-bit, 32-bit integer PCM, stereo
        scale = 2 ** (8 * width - 1)
        ints = np.clip(np.rint(tone * scale), -scale, scale - 1).astype(np.int64)
        stereo = np.stack([ints, ints], axis=1).reshape(-1)
        if width == 1:
            raw = (stereo + 128).astype(np.uint8).tobytes()
        else:
            raw = b''.join(int(v).to_bytes(width, 'little', signed=True) for v in stereo)
        with wave.open(str(tmp_path / f'w{width}.wav'), 'wb') as wf:
            wf.setnchannels(2)
            wf.setsampwidth(width)
            wf.setframerate(16000)
            wf.writeframes(raw)
        audio, rate = read_wav(tmp_path / f'w{width}.wav')
        assert rate == 16000
        np.testing.assert_allclose(audio, tone, atol=2.0 / scale)
    from scipy.io import wavfile
    wavfile.write(tmp_path / 'f32.wav', 22050, tone)   # float WAV: Python's wave module refuses it
    audio, rate = read_wav(tmp_path / 'f32.wav')
    assert rate == 22050
    np.testing.assert_array_equal(audio, tone)
    # WAVE_FORMAT_EXTENSIBLE 24-bit stereo (common in UrbanSound8K; Python 3.11's wave refuses it)
    ints = np.clip(np.rint(tone * 2 ** 23), -2 ** 23, 2 ** 23 - 1).astype(np.int64)
    pcm = b''.join(int(v).to_bytes(3, 'little', signed=True) for v in np.repeat(ints, 2))
    pcm_guid = bytes.fromhex('0100000000001000800000aa00389b71')
    fmt = struct.pack('<HHIIHHHHI', 0xFFFE, 2, 44100, 44100 * 6, 6, 24, 22, 24, 0b11) + pcm_guid
    riff = b'WAVE' + b'fmt ' + struct.pack('<I', len(fmt)) + fmt + b'data' + struct.pack('<I', len(pcm)) + pcm
    (tmp_path / 'ext24.wav').write_bytes(b'RIFF' + struct.pack('<I', len(riff)) + riff)
    audio, rate = read_wav(tmp_path / 'ext24.wav')
    assert rate == 44100
    np.testing.assert_allclose(audio, tone, atol=2.0 ** -22)
    data = (tmp_path / 's16.wav').read_bytes()
    (tmp_path / 'cut.wav').write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match='cut.wav.*truncated'):
        read_wav(tmp_path / 'cut.wav')
    (tmp_path / 'text.wav').write_text('not audio')
    with pytest.raises(ValueError, match='text.wav'):
        read_wav(tmp_path / 'text.wav')
    with pytest.raises(FileNotFoundError, match='missing.wav'):
        read_wav(tmp_path / 'missing.wav')
