"""Data sets for training and evaluation: AV digits (FSDD + MNIST) and the papers' data set loaders."""
from .av_digits import DEFAULT_TEST_SPEAKERS, LABELS, PROTOCOLS, SPEAKERS, AVDigits, RawSample

__all__ = ['AVDigits', 'DEFAULT_TEST_SPEAKERS', 'LABELS', 'PROTOCOLS', 'RawSample', 'SPEAKERS']
