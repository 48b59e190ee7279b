"""Data sets for training and evaluation: AV digits (FSDD + MNIST) and the papers' data set loaders.

All of them yield ``(audio (T,1,Ha,Wa), visual (T,C,Hv,Wv), label)`` through the shared preprocessing and
expose ``raw(i)`` (the signals before preprocessing). See docs/data.md.
"""
from .audio_image import CIFAR10_CLASSES, URBANSOUND8K_CLASSES, Cifar10AV, UrbanSound8KAV
from .av_digits import DEFAULT_TEST_SPEAKERS, LABELS, PROTOCOLS, SPEAKERS, AVDigits, RawSample
from .ave import AVE
from .crema_d import CREMA_D_CLASSES, CremaD
from .paper_datasets import PAPER_CONFIGS, ClipSample, paper_config

__all__ = ['AVDigits', 'AVE', 'CIFAR10_CLASSES', 'CREMA_D_CLASSES', 'Cifar10AV', 'ClipSample', 'CremaD',
           'DEFAULT_TEST_SPEAKERS', 'LABELS', 'PAPER_CONFIGS', 'PROTOCOLS', 'RawSample', 'SPEAKERS',
           'URBANSOUND8K_CLASSES', 'UrbanSound8KAV', 'paper_config']
