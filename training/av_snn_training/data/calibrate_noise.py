"""Calibrate the ``noisy`` protocol with small non-spiking proxy models (speaker-held-out).

Trains a tiny CNN per modality on the preprocessed features of the training speakers (corrupted with
several corruption seeds, i.e. noise augmentation, so the proxy is a strong-ish bound) and reports
accuracy on the held-out speakers; the two proxies' log-probabilities are summed for a late-fusion figure.
The numbers in docs/data.md come from::

    python -m av_snn_training.data.calibrate_noise --data-root ../shared/data

Options allow a grid over SNR / image-noise parameters. CPU only; ~1-3 min per setting on 2 cores.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch
from torch import nn

from av_snn_ros.preprocessing import PreprocessConfig, audio_steps, image_steps

from .av_digits import NUM_CLASSES, PROTOCOLS, AVDigits, NoisyProtocol, load_mnist, scan_recordings
from .corruptions import AudioCorruption, ImageCorruption, corrupt_image

EPOCHS = 20
BATCH = 64
LR = 2e-3


def _cnn(in_ch: int, flat_hw: tuple[int, int]) -> nn.Module:
    h, w = flat_hw
    return nn.Sequential(
        nn.Conv2d(in_ch, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * (h // 8) * (w // 8), NUM_CLASSES))


def _fit(x: np.ndarray, y: np.ndarray, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = _cnn(x.shape[1], x.shape[2:])
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, LR, total_steps=EPOCHS * ((len(x) + BATCH - 1) // BATCH))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(EPOCHS):
        model.train()
        for idx in torch.randperm(len(x), generator=gen).split(BATCH):
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def _log_probs(model: nn.Module, x: np.ndarray) -> np.ndarray:
    return torch.cat([model(b).log_softmax(1) for b in torch.from_numpy(x).split(256)]).numpy()


def _audio_features(ds: AVDigits) -> tuple[np.ndarray, np.ndarray]:
    feats = [audio_steps(ds.raw(i).audio, ds.cfg) for i in range(len(ds))]   # (T,1,Ha,Wa) each
    x = np.stack([np.concatenate(list(f[:, 0]), axis=1)[None] for f in feats])  # (N,1,Ha,T*Wa)
    return x.astype(np.float32), np.array(ds.labels, dtype=np.int64)


def _image_features(images: np.ndarray, params: ImageCorruption | None, cfg: PreprocessConfig,
                    seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    for img in images:
        if params is not None:
            img = corrupt_image(img, params, rng)
        out.append(image_steps([img] * cfg.timesteps, cfg)[0])   # a static image: one step suffices
    return np.stack(out).astype(np.float32)


def calibrate(data_root: str, protocol: NoisyProtocol | None, train_seeds: int, image_train: int,
              model_seed: int = 0, test_speakers: list[str] | None = None) -> dict:
    """Speaker-held-out proxy accuracies (audio alone, image alone, late fusion) for one protocol.

    ``image_train=0`` skips the image proxy (audio only, e.g. for leave-one-speaker-out runs).
    """
    cfg = PreprocessConfig()
    train_speakers = None
    if test_speakers:
        found = {r.speaker for r in scan_recordings(data_root)}
        train_speakers = sorted(found - set(test_speakers))
    xs, ys = [], []
    for s in range(train_seeds):    # each seed redraws the corruptions: noise augmentation
        ds = AVDigits(data_root, 'train', cfg, seed=s, speakers=train_speakers)
        ds.corruption = protocol
        x, y = _audio_features(ds)
        xs.append(x)
        ys.append(y)
    audio_model = _fit(np.concatenate(xs), np.concatenate(ys), model_seed)

    test = AVDigits(data_root, 'test', cfg, seed=0, speakers=test_speakers)
    test.corruption = protocol
    xa, y = _audio_features(test)
    la = _log_probs(audio_model, xa)
    if image_train == 0:
        return {'test_speakers': list(test.speakers), 'n_test': len(test), 'audio': float(np.mean(la.argmax(1) == y))}

    mnist = load_mnist(data_root)
    pick = np.random.default_rng(model_seed).permutation(len(mnist['x_train']))[:image_train]
    xi = _image_features(mnist['x_train'][pick], protocol.image if protocol else None, cfg, 1000 + model_seed)
    image_model = _fit(xi, mnist['y_train'][pick].astype(np.int64), model_seed)

    xv = np.stack([image_steps([test.raw(i).image] * cfg.timesteps, cfg)[0] for i in range(len(test))])
    lv = _log_probs(image_model, xv.astype(np.float32))
    acc = {name: float(np.mean(lp.argmax(1) == y)) for name, lp in
           (('audio', la), ('image', lv), ('fusion', la + lv))}
    return {'test_speakers': list(test.speakers), 'n_test': len(test), **acc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-root', required=True)
    parser.add_argument('--protocol', default='noisy', choices=tuple(PROTOCOLS))
    parser.add_argument('--snr-db', type=float, nargs='*', help='override the audio SNR (grid)')
    parser.add_argument('--noise-std', type=float, help='override the image noise std')
    parser.add_argument('--patches', type=int, help='override the number of occlusion patches')
    parser.add_argument('--train-seeds', type=int, default=3)
    parser.add_argument('--image-train', type=int, default=10000)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--test-speakers', nargs='*', help='held-out speakers (default: the data set default)')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = PROTOCOLS[args.protocol]
    for snr in args.snr_db or [None]:
        protocol = base
        if base is not None:
            audio = base.audio if snr is None else AudioCorruption(snr_db=snr, kinds=base.audio.kinds)
            image = dataclasses.replace(base.image, **{k: v for k, v in (('noise_std', args.noise_std),
                                                                         ('patches', args.patches))
                                                       if v is not None})
            protocol = NoisyProtocol(audio, image)
        t0 = time.time()
        result = calibrate(args.data_root, protocol, args.train_seeds, args.image_train,
                           test_speakers=args.test_speakers)
        result['protocol'] = dataclasses.asdict(protocol) if protocol else 'clean'
        result['seconds'] = round(time.time() - t0, 1)
        print(json.dumps(result), flush=True)


if __name__ == '__main__':
    main()
