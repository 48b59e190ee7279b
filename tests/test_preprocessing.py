"""The shared preprocessing path: decoding, log-mel slices in time order, frame conversion, strict config."""
import numpy as np
import pytest

from av_snn_ros.config import from_dict
from av_snn_ros.model_card import ModelCard, ModelFileError
from av_snn_ros.preprocessing import (PreprocessConfig, audio_steps, fit_length, image_steps,
                                      log_mel_spectrogram, mel_filterbank, pcm_to_float, resample,
                                      to_model_channels)

CFG = PreprocessConfig()


def _tone(freq_hz: float, start_s: float, stop_s: float, cfg=CFG) -> np.ndarray:
    t = np.arange(cfg.window_samples) / cfg.sample_rate
    return (0.5 * np.sin(2 * np.pi * freq_hz * t) * ((t >= start_s) & (t < stop_s))).astype(np.float32)


def test_tone_lands_in_its_mel_bin_and_its_timestep():
    """A 1 kHz tone during the third quarter of the window shows up only in timestep 2, at the 1 kHz mel bin."""
    steps = audio_steps(_tone(1000.0, 0.5, 0.75), CFG)
    assert steps.shape == (4, 1, 32, 32) and steps.dtype == np.float32
    fb = mel_filterbank(CFG.sample_rate, CFG.n_fft, CFG.n_mels, CFG.f_min, CFG.f_max)
    tone_bin = np.argmax(fb[:, int(round(1000 * CFG.n_fft / CFG.sample_rate))])
    per_step = steps[:, 0, tone_bin, :].mean(axis=1)
    assert np.argmax(per_step) == 2 and per_step[2] > per_step[1] + 1.0
    silence = (np.log(CFG.log_floor) - CFG.audio_mean) / CFG.audio_std
    assert np.allclose(steps[0], silence, atol=1e-4)             # nothing leaks backwards in time
    inner = steps[2, 0, :, 4:-4]   # away from the frames that straddle the tone's edges
    assert np.argmax(inner.mean(axis=1)) == tone_bin


def test_log_mel_matches_direct_dft_power():
    """Spot-check one frame against a from-scratch DFT (no shared helper)."""
    audio = np.random.default_rng(0).standard_normal(CFG.window_samples).astype(np.float32) * 0.1
    logmel = log_mel_spectrogram(audio, CFG)
    k = 40
    start = k * CFG.hop_length - CFG.n_fft // 2          # centred frame
    frame = audio[start:start + CFG.n_fft] * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(CFG.n_fft) / CFG.n_fft))
    n = np.arange(CFG.n_fft)
    freqs = np.arange(CFG.n_fft // 2 + 1)[:, None]
    dft = (frame[None, :] * np.exp(-2j * np.pi * freqs * n[None, :] / CFG.n_fft)).sum(axis=1)
    fb = mel_filterbank(CFG.sample_rate, CFG.n_fft, CFG.n_mels, CFG.f_min, CFG.f_max)
    expected = np.log(fb @ np.abs(dft) ** 2 + CFG.log_floor)
    assert np.allclose(logmel[:, k], expected, atol=1e-3)


def test_pcm_decoding_and_its_errors():
    s16 = np.array([0, 16384, -32768, 32767, 100, -100], dtype='<i2')
    mono = pcm_to_float(s16.tobytes(), 'S16LE', 2)                 # 3 stereo frames, averaged
    assert np.allclose(mono, [(0 + 0.5) / 2, (-1 + 32767 / 32768) / 2, 0.0], atol=1e-6)
    f32 = np.array([0.1, -0.2], dtype='<f4')
    assert np.allclose(pcm_to_float(f32.tobytes(), 'F32LE', 1), [0.1, -0.2])
    with pytest.raises(ValueError, match='whole number'):
        pcm_to_float(b'\x00\x01\x02', 'S16LE', 1)
    with pytest.raises(ValueError, match='NaN'):
        pcm_to_float(np.array([np.nan], '<f4').tobytes(), 'F32LE', 1)
    with pytest.raises(ValueError, match='unsupported'):
        pcm_to_float(b'\x00\x00', 'MP3', 1)
    with pytest.raises(ValueError, match='expected 16000'):
        audio_steps(np.zeros(100, np.float32), CFG)


def test_resample_and_fit_length():
    x8k = np.sin(2 * np.pi * 440 * np.arange(8000) / 8000).astype(np.float32)
    x16k = resample(x8k, 8000, 16000)
    assert len(x16k) == 16000
    spectrum = np.abs(np.fft.rfft(x16k))
    assert abs(np.argmax(spectrum) - 440) <= 1                   # 1 Hz bins at 16 kHz / 16000 samples
    centred = fit_length(np.ones(4, np.float32), 8)
    assert centred.tolist() == [0, 0, 1, 1, 1, 1, 0, 0]
    cropped = fit_length(np.arange(10, dtype=np.float32), 4)
    assert cropped.tolist() == [3, 4, 5, 6]


def test_frames_gray_rgb_and_resize():
    rgb = np.zeros((28, 28, 3), np.uint8)
    rgb[..., 0] = 255                                             # pure red
    gray = to_model_channels(rgb, 1)
    assert gray.shape == (28, 28, 1) and int(gray[0, 0, 0]) == round(0.299 * 255)
    steps = image_steps([rgb] * CFG.timesteps, CFG)
    assert steps.shape == (4, 1, 32, 32)
    assert np.allclose(steps, (round(0.299 * 255) / 255 - CFG.image_mean) / CFG.image_std, atol=1e-6)
    three = image_steps([gray[..., 0]] * 4, CFG.replace(image_channels=3))
    assert three.shape == (4, 3, 32, 32) and np.allclose(three[:, 0], three[:, 2])
    with pytest.raises(ValueError, match='uint8'):
        image_steps([np.zeros((28, 28), np.float32)] * 4, CFG)
    with pytest.raises(ValueError, match='expected 4 frames'):
        image_steps([rgb] * 3, CFG)


def test_config_rejects_unknown_keys_and_wrong_types():
    assert from_dict(PreprocessConfig, {'timesteps': 6}).timesteps == 6
    with pytest.raises(ValueError, match='timestepz'):
        from_dict(PreprocessConfig, {'timestepz': 6})
    with pytest.raises(ValueError, match='window_s'):
        from_dict(PreprocessConfig, {'window_s': 'long'})
    with pytest.raises(ValueError, match='audio_size'):
        from_dict(PreprocessConfig, {'audio_size': [32]})
    with pytest.raises(ValueError, match='image_channels'):
        PreprocessConfig(image_channels=2)


def test_model_card_errors_are_clear(tmp_path):
    with pytest.raises(ModelFileError, match='cannot read'):
        ModelCard.load(tmp_path / 'missing.yaml')
    (tmp_path / 'card.yaml').write_text('name: x\nmodel: misnet_tiny\n')
    with pytest.raises(ModelFileError, match='lacks required'):
        ModelCard.load(tmp_path)
    (tmp_path / 'w.pt').write_bytes(b'weights')
    (tmp_path / 'card.yaml').write_text(
        'name: x\nmodel: misnet_tiny\nlabels: [a, b]\npreprocessing: {timesteps: 4}\n'
        'weights: w.pt\nweights_sha256: "0000"\n')
    with pytest.raises(ModelFileError, match='does not match'):
        ModelCard.load(tmp_path)
    (tmp_path / 'card.yaml').write_text(
        'name: x\nmodel: misnet_tiny\nlabels: [a, b]\npreprocessing: {bogus: 4}\n'
        'weights: w.pt\nweights_sha256: "0000"\n')
    with pytest.raises(ModelFileError, match='bogus'):
        ModelCard.load(tmp_path)
