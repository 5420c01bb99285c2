"""Bootstrap intervals over near-duplicate groups."""
import numpy as np

from tumord.training.intervals import group_bootstrap, paired_auc_difference

NAMES = ["normal", "tumor"]


def _predictions(n, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    p_tumor = np.clip(0.5 + (labels - 0.5) * 0.6 + rng.normal(0, 0.25, n), 0, 1)
    return np.stack([1 - p_tumor, p_tumor], axis=1), labels


def test_copies_drawn_together_widen_the_interval_as_much_as_they_should():
    """Ten copies of each of 40 scans are the evidence of 40 scans, not of 400: the interval over
    groups matches the interval of the 40 scans alone, and is far wider than one over images."""
    probs, labels = _predictions(40)
    copies = np.repeat(np.arange(40), 10)
    grouped = group_bootstrap(probs[copies], labels[copies], copies, NAMES, "normal", resamples=400)
    by_image = group_bootstrap(probs[copies], labels[copies], np.arange(400), NAMES, "normal", resamples=400)
    alone = group_bootstrap(probs, labels, np.arange(40), NAMES, "normal", resamples=400)
    width = {name: r["accuracy"][1] - r["accuracy"][0] for name, r in
             (("grouped", grouped), ("by_image", by_image), ("alone", alone))}
    assert width["grouped"] > 2 * width["by_image"], width
    assert abs(width["grouped"] - width["alone"]) < 0.35 * width["alone"], width
    assert grouped["groups"] == 40 and by_image["groups"] == 400


def test_the_interval_holds_the_point_estimate_and_is_reproducible():
    probs, labels = _predictions(200, seed=3)
    first = group_bootstrap(probs, labels, np.arange(200), NAMES, "normal", resamples=300, seed=1)
    again = group_bootstrap(probs, labels, np.arange(200), NAMES, "normal", resamples=300, seed=1)
    assert first == again
    accuracy = (probs.argmax(1) == labels).mean()
    assert first["accuracy"][0] < accuracy < first["accuracy"][1]
    assert 0.5 < first["auc"][0] < first["auc"][1] <= 1.0 and first["level"] == 0.95


def test_every_resample_keeps_both_classes():
    """Groups are drawn within their class: two tumors among fifty normal scans, both found, give
    sensitivity 1 in every resample. Drawn from all groups at once, about one resample in eight
    would hold no tumor at all and report sensitivity 0."""
    labels = np.r_[np.zeros(50, int), 1, 1]
    probs = np.stack([1 - labels * 0.9, labels * 0.9], axis=1)
    iv = group_bootstrap(probs, labels, np.arange(52), NAMES, "normal", resamples=400)
    assert iv["sensitivity"] == [1.0, 1.0] and iv["specificity"] == [1.0, 1.0]


def test_paired_auc_difference_separates_a_real_gap_from_noise():
    """Same scores: a difference of exactly 0. A model that ranks every scan better: an interval
    above 0. Two equally good but differently noisy models: an interval that spans 0."""
    rng = np.random.default_rng(1)
    labels = np.arange(300) % 2
    groups = np.arange(300) // 3  # copies come in threes
    weak = labels + rng.normal(0, 1.0, 300)
    same = paired_auc_difference(weak, weak.copy(), labels, groups, resamples=300)
    assert same["difference"] == 0 and same["interval"] == [0.0, 0.0]
    strong = labels + rng.normal(0, 0.3, 300)
    better = paired_auc_difference(weak, strong, labels, groups, resamples=300)
    assert better["difference"] > 0.1 and better["interval"][0] > 0 and better["share_b_better"] == 1.0
    other = labels + rng.normal(0, 1.0, 300)
    noise = paired_auc_difference(weak, other, labels, groups, resamples=300)
    assert noise["interval"][0] < 0 < noise["interval"][1], noise
    assert noise["groups"] == better["groups"] == 100
