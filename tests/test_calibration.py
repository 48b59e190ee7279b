"""Temperature scaling of the published confidence: the fit recovers a known scale; the card carries it."""
import shutil

import numpy as np
import pytest

from av_snn_ros.model_card import ModelCard, ModelFileError
from av_snn_training.calibration import expected_calibration_error, fit_logit_scale, write_logit_scale


def test_fit_recovers_the_scale_that_generated_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((20000, 10))
    true_scale = 3.0
    p = np.exp(true_scale * logits)
    p /= p.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(10, p=row) for row in p])
    scale = fit_logit_scale(logits, labels)
    assert abs(scale - true_scale) / true_scale < 0.05
    assert expected_calibration_error(logits, labels, scale) < expected_calibration_error(logits, labels, 1.0)
    with pytest.raises(ValueError, match='need'):
        fit_logit_scale(logits[:, 0], labels)


def test_card_carries_the_scale_and_rejects_a_bad_one(tmp_path, shipped_card):
    src = shipped_card.parent
    card_dir = tmp_path / 'card'
    shutil.copytree(src, card_dir)
    write_logit_scale(card_dir / 'card.yaml', 4.5)
    assert ModelCard.load(card_dir).logit_scale == 4.5
    write_logit_scale(card_dir / 'card.yaml', 2.0)          # replaces, never duplicates the key
    assert (card_dir / 'card.yaml').read_text().count('logit_scale:') == 1
    assert ModelCard.load(card_dir).logit_scale == 2.0
    (card_dir / 'card.yaml').write_text((card_dir / 'card.yaml').read_text().replace(
        'logit_scale: 2', 'logit_scale: -1'))
    with pytest.raises(ModelFileError, match='logit_scale'):
        ModelCard.load(card_dir)
