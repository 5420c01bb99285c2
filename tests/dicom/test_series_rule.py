"""The series rules on known slice probabilities: what drives the verdict, and the label it gives."""
import numpy as np

from tumord.service.series import Rule, combine, instance_probabilities

BINARY = ["normal", "tumor"]
FOUR = ["glioma", "meningioma", "notumor", "pituitary"]


def slices(tumor_probs):
    p = np.array(tumor_probs, float)
    return np.stack([1 - p, p], axis=1)


def test_max_follows_the_single_most_suspicious_slice():
    label, score, driving = combine(slices([0.1, 0.2, 0.7, 0.1]), BINARY, Rule("max"))
    assert (label, round(score, 6), list(driving)) == ("tumor", 0.7, [2])


def test_top_k_mean_needs_several_suspicious_slices():
    one = slices([0.1, 0.2, 0.9, 0.1, 0.05])
    assert combine(one, BINARY, Rule("top_k_mean", 3))[:2] == ("normal", (0.9 + 0.2 + 0.1) / 3)
    three = slices([0.1, 0.8, 0.9, 0.7, 0.05])
    label, score, driving = combine(three, BINARY, Rule("top_k_mean", 3))
    assert label == "tumor" and np.isclose(score, 0.8) and list(driving) == [2, 1, 3]
    assert combine(slices([0.9, 0.8]), BINARY, Rule("top_k_mean", 3))[0] == "tumor"  # fewer slices than k


def test_finer_classes_take_the_tumor_class_of_the_driving_slices():
    p = np.array([[0.1, 0.1, 0.7, 0.1], [0.6, 0.1, 0.2, 0.1], [0.05, 0.05, 0.85, 0.05]])
    label, score, driving = combine(p, FOUR, Rule("max"))
    assert label == "glioma" and np.isclose(score, 0.8) and list(driving) == [1]
    frame, probs = instance_probabilities(p, FOUR)
    assert frame == 1 and np.array_equal(probs, p[1])


def test_without_a_negative_class_the_mean_decides():
    p = np.array([[0.6, 0.4], [0.1, 0.9], [0.2, 0.8]])
    label, score, _ = combine(p, ["a", "b"], Rule("max"))
    assert label == "b" and score is None
