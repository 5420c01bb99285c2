"""Evaluation metrics and temperature calibration."""
import numpy as np
import pytest

from tumord.nn.losses import softmax
from tumord.training.calibration import fit_temperature, nll
from tumord.training.metrics import evaluate, expected_calibration_error, roc_auc


def test_auc_equals_the_pairwise_ranking_probability():
    """ROC AUC equals P(score of a positive > score of a negative), ties counting half."""
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(300), 2)  # rounding makes ties
    positive = rng.random(300) < scores
    pos, neg = scores[positive], scores[~positive]
    pairwise = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert roc_auc(scores, positive) == pytest.approx(pairwise)
    assert roc_auc(np.array([0.9, 0.8, 0.1]), np.array([True, True, False])) == 1.0


def test_binary_report_counts_tumor_as_positive():
    """Sensitivity is recall on tumor, specificity recall on normal; the confusion matrix adds up."""
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]])
    labels = np.array([0, 0, 1, 1, 1])
    m = evaluate(probs, labels, ["normal", "tumor"], "normal")
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(1 / 2)
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    assert m["per_class"]["tumor"]["precision"] == pytest.approx(2 / 3)
    assert m["n"] == 5


def test_four_class_report_treats_every_tumor_class_as_positive():
    """With 'notumor' negative, a glioma called meningioma is still a tumor found."""
    probs = np.eye(4)[[1, 0, 2, 3, 3]] * 0.9 + 0.025
    labels = np.array([0, 0, 2, 3, 1])
    m = evaluate(probs, labels, ["glioma", "meningioma", "notumor", "pituitary"], "notumor")
    assert m["sensitivity"] == 1.0 and m["specificity"] == 1.0
    assert m["accuracy"] == pytest.approx(3 / 5)


def test_ece_is_zero_when_confidence_matches_accuracy_and_large_when_overconfident():
    """Calibration error measures the gap between confidence and accuracy."""
    labels = np.array([0] * 8 + [1] * 2)
    calibrated = np.tile([0.8, 0.2], (10, 1))
    assert expected_calibration_error(calibrated, labels) == pytest.approx(0.0, abs=1e-9)
    over = np.tile([0.99, 0.01], (10, 1))
    assert expected_calibration_error(over, labels) == pytest.approx(0.19)


def test_temperature_fit_recovers_the_true_temperature():
    """Labels drawn from softmax(z / 2.5) give a fitted temperature near 2.5 and a lower NLL."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((20000, 3)) * 4
    p = softmax(z / 2.5)
    labels = (p.cumsum(1) > rng.random((20000, 1))).argmax(1)
    t = fit_temperature(z, labels)
    assert t == pytest.approx(2.5, rel=0.05)
    assert nll(z, labels, t) < nll(z, labels, 1.0)
