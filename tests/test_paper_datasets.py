"""Paper data set loaders on tiny generated files in each published layout."""
from __future__ import annotations

import pickle
import wave

import numpy as np
import pytest

from av_snn_ros.preprocessing import PreprocessConfig, fit_length, preprocess_window, resample
from av_snn_training.data import (AVE, CIFAR10_CLASSES, CREMA_D_CLASSES, URBANSOUND8K_CLASSES, Cifar10AV,
                                  CremaD, UrbanSound8KAV, paper_config)
from av_snn_training.data.wav import read_wav, write_wav

cv2 = pytest.importorskip('cv2')

SR = 16000
CFG = PreprocessConfig(window_s=1.0, image_size=(16, 16), image_channels=3)   # small: fast tests
T = CFG.timesteps
FRAMES_PER_CLIP = 10
UNIFORM_PICKS = [1, 3, 6, 8]   # centres of 4 equal parts of 10 candidates


def _tone(seconds: float, freq: float, rate: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _frame(value: int, shape=(24, 32)) -> np.ndarray:
    return np.full((*shape, 3), value, dtype=np.uint8)


def _value(frame: np.ndarray) -> float:
    return float(frame.mean())


def _check_contract(ds, i: int) -> None:
    raw = ds.raw(i)
    audio, visual, label = ds[i]
    assert raw.audio.shape == (ds.cfg.window_samples,) and raw.audio.dtype == np.float32
    assert len(raw.frames) == ds.cfg.timesteps and all(f.dtype == np.uint8 for f in raw.frames)
    assert tuple(audio.shape) == (ds.cfg.timesteps, 1, *ds.cfg.audio_size)
    assert tuple(visual.shape) == (ds.cfg.timesteps, ds.cfg.image_channels, *ds.cfg.image_size)
    ref_a, ref_v = preprocess_window(raw.audio, list(raw.frames), ds.cfg)
    np.testing.assert_array_equal(audio.numpy(), ref_a)
    np.testing.assert_array_equal(visual.numpy(), ref_v)
    assert label == raw.label and 0 <= label < len(ds.classes)


# ------------------------------------------------------------------------------------------ CREMA-D

def _make_crema(root, actors=('1001', '1002', '1003'), sentences=('DFA', 'IEO')) -> list[str]:
    (root / 'AudioWAV').mkdir(parents=True)
    clips = []
    for a in actors:
        for s in sentences:
            for e, emo in enumerate(CREMA_D_CLASSES):
                clip = f'{a}_{s}_{emo}_XX'
                write_wav(root / 'AudioWAV' / f'{clip}.wav', _tone(0.6, 200 + 50 * e), SR)
                frame_dir = root / 'Image-01-FPS' / clip
                frame_dir.mkdir(parents=True)
                for k in range(FRAMES_PER_CLIP):   # frame k is grey level 20k: the pick is visible
                    cv2.imwrite(str(frame_dir / f'{k:05d}.jpg'), _frame(20 * k))
                clips.append(clip)
    return clips


def test_crema_d_seeded_split_labels_frames(tmp_path):
    clips = _make_crema(tmp_path)
    train = CremaD(tmp_path, 'train', CFG, test_fraction=0.25)
    test = CremaD(tmp_path, 'test', CFG, test_fraction=0.25)
    train_clips, test_clips = {it.clip for it in train.items}, {it.clip for it in test.items}
    assert train_clips.isdisjoint(test_clips) and train_clips | test_clips == set(clips)
    assert len(test) == 9
    assert train.frame_sampling == 'random' and test.frame_sampling == 'uniform'
    for ds in (train, test):
        _check_contract(ds, 0)
        for i in range(len(ds)):
            assert ds.items[i].label == CREMA_D_CLASSES.index(ds.items[i].clip.split('_')[2])
    # test: evenly spaced frames; audio = the utterance centred in the window
    raw = test.raw(2)
    assert [round(_value(f) / 20) for f in raw.frames] == UNIFORM_PICKS
    native, rate = read_wav(tmp_path / 'AudioWAV' / f'{raw.clip}.wav')
    np.testing.assert_array_equal(raw.audio, fit_length(resample(native, rate, SR), CFG.window_samples))
    # train: random sorted frames, deterministic per (seed, epoch, index), new draw each epoch
    picks = lambda ds, i: [round(_value(f) / 20) for f in ds.raw(i).frames]   # noqa: E731
    first = [picks(train, i) for i in range(len(train))]
    assert all(p == sorted(p) for p in first)
    assert first == [picks(CremaD(tmp_path, 'train', CFG, test_fraction=0.25), i) for i in range(len(train))]
    train.set_epoch(1)
    assert first != [picks(train, i) for i in range(len(train))]


def test_crema_d_actor_split_and_csv_split(tmp_path):
    _make_crema(tmp_path)
    train = CremaD(tmp_path, 'train', CFG, split_by='actor', test_fraction=0.34)
    test = CremaD(tmp_path, 'test', CFG, split_by='actor', test_fraction=0.34)
    assert {it.actor for it in train.items}.isdisjoint({it.actor for it in test.items})
    assert len(test) == 12
    (tmp_path / 'train.csv').write_text('1001_DFA_ANG_XX,ANG\n1002_IEO_SAD_XX,SAD\n')
    (tmp_path / 'test.csv').write_text('clip,label\n1003_DFA_NEU_XX,NEU\n')
    assert sorted(it.clip for it in CremaD(tmp_path, 'train', CFG).items) == ['1001_DFA_ANG_XX', '1002_IEO_SAD_XX']
    test = CremaD(tmp_path, 'test', CFG)
    assert [it.clip for it in test.items] == ['1003_DFA_NEU_XX'] and test.split_source.endswith('test.csv')
    assert test[0][2] == CREMA_D_CLASSES.index('NEU')


def test_crema_d_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='AudioWAV'):
        CremaD(tmp_path, cfg=CFG)
    _make_crema(tmp_path, actors=('1001',), sentences=('DFA',))
    with pytest.raises(ValueError, match='unknown split'):
        CremaD(tmp_path, 'val', CFG)
    (tmp_path / 'train.csv').write_text('1001_DFA_ANG_XX,SAD\n')
    (tmp_path / 'test.csv').write_text('1001_DFA_NEU_XX,NEU\n')
    with pytest.raises(ValueError, match='train.csv:1: label SAD contradicts'):
        CremaD(tmp_path, 'train', CFG)
    (tmp_path / 'train.csv').write_text('1001_DFA_ANG_XX,ANG\n1009_DFA_ANG_XX,ANG\n')
    with pytest.raises(FileNotFoundError, match='1009_DFA_ANG_XX.*missing audio'):
        CremaD(tmp_path, 'train', CFG)
    ds = CremaD(tmp_path, 'train', CFG, skip_missing=True)
    assert len(ds) == 1 and ds.skipped == ['1009_DFA_ANG_XX']
    frame = tmp_path / 'Image-01-FPS' / '1001_DFA_ANG_XX' / '00003.jpg'
    frame.write_bytes(b'not a jpeg')
    with pytest.raises(ValueError, match='00003.jpg: not a decodable image'):
        for _ in range(4):    # random picks: some epoch reaches frame 3
            ds.raw(0)
            ds.set_epoch(ds.epoch + 1)
    (tmp_path / 'train.csv').unlink()
    (tmp_path / 'AudioWAV' / 'notes.wav').write_bytes(b'')
    with pytest.raises(ValueError, match='notes.wav'):
        CremaD(tmp_path, 'train', CFG)


# ---------------------------------------------------------------------------------------------- AVE

AVE_FPS = 10


def _write_video(path, n_frames: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), AVE_FPS, (32, 24))
    assert writer.isOpened()
    for k in range(n_frames):
        writer.write(_frame(8 * k))
    writer.release()


def _decode_all(path) -> list[np.ndarray]:
    """Every frame of a video, read front to back (no seeking), as RGB."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(frame[:, :, ::-1]))
    cap.release()
    return frames


def _make_ave(root) -> None:
    (root / 'AVE').mkdir(parents=True)
    (root / 'audio').mkdir()
    for vid in ('vidA', 'vidB', 'vidC'):
        _write_video(root / 'AVE' / f'{vid}.mp4', 30)
        write_wav(root / 'audio' / f'{vid}.wav', _tone(3.0, 300), SR)
    header = 'Category&VideoID&Quality&StartTime&EndTime\n'
    rows = ['Church bell&vidA&good&0&3', 'Dog bark&vidB&good&1&2', 'Church bell&vidC&good&0&2']
    (root / 'Annotations.txt').write_text(header + '\n'.join(rows) + '\n')
    (root / 'trainSet.txt').write_text(header + rows[0] + '\n' + rows[2] + '\n')
    (root / 'valSet.txt').write_text(rows[2] + '\n')
    (root / 'testSet.txt').write_text(rows[1] + '\n')


def test_ave_segments_frames_and_audio(tmp_path):
    _make_ave(tmp_path)
    cfg = CFG.replace(window_s=2.0)
    test = AVE(tmp_path, 'test', cfg)
    assert test.classes == ('Church bell', 'Dog bark') and len(test) == 1
    _check_contract(test, 0)
    raw = test.raw(0)
    assert raw.label == 1 and raw.clip == 'vidB_1_2'
    # segment [1, 2) s = frames 10..19; uniform picks of 10 candidates -> frames 11, 13, 16, 18. The
    # codec shifts grey levels by up to ~4 (half the 8-level step between frames), so identify each pick
    # exactly: it must equal that frame of an independent sequential decode, and no other frame.
    decoded = _decode_all(tmp_path / 'AVE' / 'vidB.mp4')
    assert [[j for j, d in enumerate(decoded) if np.array_equal(d, f)] for f in raw.frames] == \
        [[10 + k] for k in UNIFORM_PICKS]
    # audio: the 1 s event segment centred in the 2 s window
    nonzero = np.flatnonzero(raw.audio)
    assert abs(len(raw.audio[nonzero[0]:nonzero[-1] + 1]) - SR) < 0.01 * SR
    assert abs((nonzero[0] + nonzero[-1]) / 2 - cfg.window_samples / 2) < 0.01 * SR
    train = AVE(tmp_path, 'train', cfg)
    assert len(train) == 2 and train.frame_sampling == 'random'
    values = [_value(f) for f in train.raw(0).frames]
    assert values == sorted(values)
    assert len(AVE(tmp_path, 'val', cfg)) == 1


def test_ave_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='Annotations.txt'):
        AVE(tmp_path, cfg=CFG)
    _make_ave(tmp_path)
    (tmp_path / 'testSet.txt').write_text('Dog bark&vidB&good&1\n')
    with pytest.raises(ValueError, match=r'testSet.txt:1: expected Category&VideoID'):
        AVE(tmp_path, 'test', CFG)
    (tmp_path / 'testSet.txt').write_text('Helicopter&vidB&good&1&2\n')
    with pytest.raises(ValueError, match="'Helicopter' is not in Annotations.txt"):
        AVE(tmp_path, 'test', CFG)
    (tmp_path / 'testSet.txt').write_text('Dog bark&vidB&good&1&2\n')
    (tmp_path / 'audio' / 'vidB.wav').unlink()
    with pytest.raises(FileNotFoundError, match='vidB.wav'):
        AVE(tmp_path, 'test', CFG)
    with pytest.raises(ValueError, match='split is empty'):    # its one row is skipped
        AVE(tmp_path, 'test', CFG, skip_missing=True)
    (tmp_path / 'audio' / 'vidC.wav').unlink()
    ds = AVE(tmp_path, 'train', CFG, skip_missing=True)
    assert ds.skipped == ['vidC'] and len(ds) == 1
    (tmp_path / 'AVE' / 'vidA.mp4').write_bytes(b'\x00' * 100)
    i = [it.video_id for it in ds.items].index('vidA')
    with pytest.raises(ValueError, match='vidA.mp4'):
        ds.raw(i)


# ------------------------------------------------------------------------------- UrbanSound8K-AV

def _write_pcm(path, audio: np.ndarray, rate: int, width: int, channels: int) -> None:
    scale = 2 ** (8 * width - 1)
    ints = np.clip(np.rint(audio * scale), -scale, scale - 1).astype(np.int64)
    ints = np.repeat(ints, channels)
    raw = b''.join(int(v).to_bytes(width, 'little', signed=True) for v in ints)
    with wave.open(str(path), 'wb') as wf:
        wf.setnchannels(channels)
        wf.setsampwidth(width)
        wf.setframerate(rate)
        wf.writeframes(raw)


def _make_us8k(audio_root, image_root, images_per_class: int = 8) -> None:
    from scipy.io import wavfile
    rows = ['slice_file_name,fsID,start,end,salience,fold,classID,class']
    for fold in (1, 10):
        (audio_root / 'audio' / f'fold{fold}').mkdir(parents=True, exist_ok=True)
        for cid, name in enumerate(URBANSOUND8K_CLASSES):
            fname = f'{100 + cid}-{cid}-0-{fold}.wav'
            path = audio_root / 'audio' / f'fold{fold}' / fname
            kind = cid % 3   # the formats UrbanSound8K actually mixes
            if kind == 0:
                write_wav(path, _tone(0.4, 500, 22050), 22050)
            elif kind == 1:
                _write_pcm(path, _tone(0.4, 500, 8000), 8000, width=3, channels=2)
            else:
                wavfile.write(path, 32000, _tone(0.4, 500, 32000))
            rows.append(f'{fname},{100 + cid},0.0,0.4,1,{fold},{cid},{name}')
    (audio_root / 'metadata').mkdir()
    (audio_root / 'metadata' / 'UrbanSound8K.csv').write_text('\n'.join(rows) + '\n')
    for cid, name in enumerate(URBANSOUND8K_CLASSES):
        (image_root / name).mkdir(parents=True)
        for k in range(images_per_class):
            cv2.imwrite(str(image_root / name / f'img{k}.png'), _frame(20 * cid + k, (12, 12)))


def test_urbansound8k_av_folds_pairing(tmp_path):
    audio_root, image_root = tmp_path / 'UrbanSound8K', tmp_path / 'images'
    _make_us8k(audio_root, image_root)
    train = UrbanSound8KAV(audio_root, image_root, 'train', CFG)
    test = UrbanSound8KAV(audio_root, image_root, 'test', CFG)
    assert len(train) == len(test) == 10
    assert all(it.clip.endswith('-1.wav') for it in train.items)
    assert all(it.clip.endswith('-10.wav') for it in test.items)
    assert {it.image for it in train.items}.isdisjoint({it.image for it in test.items})
    for ds in (train, test):
        _check_contract(ds, 0)
        for i in range(len(ds)):
            raw = ds.raw(i)
            assert raw.label == int(raw.clip.split('-')[1])                    # classID from the name
            assert int(_value(raw.frames[0]) // 20) == raw.label               # image of the same class
            assert all(f is raw.frames[0] for f in raw.frames)                 # static over T
            assert np.abs(raw.audio).max() > 0.25                              # every WAV format decoded
    again = UrbanSound8KAV(audio_root, image_root, 'train', CFG)
    other = UrbanSound8KAV(audio_root, image_root, 'train', CFG, seed=3)
    pairs = lambda ds: {it.clip: it.image for it in ds.items}   # noqa: E731
    assert pairs(train) == pairs(again) and pairs(train) != pairs(other)
    assert len(UrbanSound8KAV(audio_root, image_root, 'test', CFG, test_folds=(1, 10))) == 20


def test_urbansound8k_av_errors(tmp_path):
    audio_root, image_root = tmp_path / 'UrbanSound8K', tmp_path / 'images'
    with pytest.raises(FileNotFoundError, match='UrbanSound8K.csv'):
        UrbanSound8KAV(audio_root, image_root, cfg=CFG)
    _make_us8k(audio_root, image_root, images_per_class=3)
    meta = audio_root / 'metadata' / 'UrbanSound8K.csv'
    text = meta.read_text()
    meta.write_text(text.replace(',0,air_conditioner', ',0,siren', 1))
    with pytest.raises(ValueError, match="class 'siren' does not match classID 0"):
        UrbanSound8KAV(audio_root, image_root, cfg=CFG)
    meta.write_text(text)
    (audio_root / 'audio' / 'fold1' / '103-3-0-1.wav').unlink()
    with pytest.raises(FileNotFoundError, match='103-3-0-1.wav'):
        UrbanSound8KAV(audio_root, image_root, 'train', CFG)
    for p in (image_root / 'siren').iterdir():
        p.unlink()
    (image_root / 'siren').rmdir()
    with pytest.raises(FileNotFoundError, match="class 'siren'"):
        UrbanSound8KAV(audio_root, image_root, 'test', CFG)


# ------------------------------------------------------------------------------------- CIFAR10-AV

def _make_cifar(image_root, audio_root, per_class: int = 2) -> None:
    batch_dir = image_root / 'cifar-10-batches-py'
    batch_dir.mkdir(parents=True)
    labels = [c for c in range(10) for _ in range(per_class)]
    for k, name in enumerate(['data_batch_1', 'data_batch_2', 'data_batch_3', 'data_batch_4', 'data_batch_5',
                              'test_batch']):
        # channel-planar rows (R plane, G plane, B plane) as in the real batches; value encodes class + batch
        data = np.stack([np.full(3072, 20 * c + k, dtype=np.uint8) for c in labels])
        with open(batch_dir / name, 'wb') as f:
            pickle.dump({b'data': data, b'labels': list(labels), b'batch_label': name.encode()}, f)
    for c, name in enumerate(CIFAR10_CLASSES):
        (audio_root / name).mkdir(parents=True)
        for k in range(5):
            write_wav(audio_root / name / f'{name}_{k}.wav', _tone(0.3, 300 + 40 * c), SR)


def test_cifar10_av_pairs_and_splits(tmp_path):
    image_root, audio_root = tmp_path / 'cifar', tmp_path / 'sounds'
    _make_cifar(image_root, audio_root)
    cfg = paper_config('cifar10_av')
    train = Cifar10AV(audio_root, image_root, 'train', cfg)
    test = Cifar10AV(audio_root, image_root, 'test', cfg)
    assert len(train) == 40 and len(test) == 10      # 20 % of 5 files per class held out
    assert {it.clip for it in train.items}.isdisjoint({it.clip for it in test.items})
    _check_contract(train, 0)
    for ds, batches in ((train, range(5)), (test, (5,))):
        for i in range(len(ds)):
            raw = ds.raw(i)
            assert raw.frames[0].shape == (32, 32, 3)
            value = int(raw.frames[0][0, 0, 0])
            assert value // 20 == raw.label and value % 20 in batches   # same class; train/test batches
            assert raw.clip.split('/')[0] == CIFAR10_CLASSES[raw.label]
    assert len(Cifar10AV(audio_root, image_root, 'train', cfg, num=7)) == 7
    # pre-split audio folders are used as they are
    for split, count in (('train', 2), ('test', 1)):
        for c, name in enumerate(CIFAR10_CLASSES):
            (tmp_path / 'pre' / split / name).mkdir(parents=True)
            for k in range(count):
                write_wav(tmp_path / 'pre' / split / name / f'{k}.wav', _tone(0.2, 400), SR)
    assert len(Cifar10AV(tmp_path / 'pre', image_root, 'test', cfg)) == 10


def test_cifar10_av_rejects_unsafe_or_broken_batches(tmp_path):
    image_root, audio_root = tmp_path / 'cifar', tmp_path / 'sounds'
    _make_cifar(image_root, audio_root)
    evil = image_root / 'cifar-10-batches-py' / 'test_batch'
    import collections
    with open(evil, 'wb') as f:
        pickle.dump(collections.OrderedDict(a=1), f)
    with pytest.raises(ValueError, match='refusing to load collections.OrderedDict'):
        Cifar10AV(audio_root, image_root, 'test', CFG)
    with open(evil, 'wb') as f:
        pickle.dump({b'data': np.zeros((2, 100), np.uint8), b'labels': [0, 1]}, f)
    with pytest.raises(ValueError, match='test_batch: expected uint8 data'):
        Cifar10AV(audio_root, image_root, 'test', CFG)
    evil.unlink()
    with pytest.raises(FileNotFoundError, match='test_batch'):
        Cifar10AV(audio_root, image_root, 'test', CFG)


def test_paper_configs():
    for name, size in (('crema_d', 128), ('ave', 128), ('urbansound8k_av', 96), ('cifar10_av', 32)):
        cfg = paper_config(name)
        assert cfg.image_size == (size, size) and cfg.audio_size == (size, size) and cfg.image_channels == 3
        assert cfg.timesteps == 4
    with pytest.raises(ValueError, match='unknown data set'):
        paper_config('kinetics')
