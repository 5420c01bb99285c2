"""Feature-distance scores and their thresholds, on features whose answer is known."""
from __future__ import annotations

import numpy as np
import pytest

from tumord.nn.feature_distance import build, knn_distance, normalize, surprise

RNG = np.random.default_rng(0)


def clusters(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    centres = np.array([[5.0] * 8 + [0.0] * 8, [0.0] * 8 + [5.0] * 8])
    return centres[labels] + rng.normal(0, 1, (n, 16)), labels


def test_knn_distance_is_the_distance_to_the_kth_nearest_unit_vector():
    bank = np.eye(3, dtype=np.float32)
    q = normalize(np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]], np.float32))
    assert knn_distance(q, bank, 1) == pytest.approx([0.0, np.sqrt(2 - np.sqrt(2))], abs=1e-6)
    assert knn_distance(q[:1], bank, 2) == pytest.approx([np.sqrt(2)], abs=1e-6)


@pytest.mark.parametrize("method", ["knn", "mahalanobis"])
def test_the_threshold_lets_the_chosen_share_of_validation_through_and_stops_outliers(method):
    train, labels = clusters(400, 1)
    val, _ = clusters(200, 2)
    ref = build(train, labels, val, 2, k=1)
    threshold = ref.threshold(0.95, method)
    assert np.mean(ref.score(val, method) <= threshold) == pytest.approx(0.95, abs=0.01)
    fresh, _ = clusters(500, 3)
    assert np.mean(ref.score(fresh, method) <= threshold) > 0.88
    outliers = RNG.normal(0, 1, (50, 16)) * 3 + np.r_[[-6.0] * 16]
    assert np.all(ref.score(outliers, method) > threshold)


def test_a_share_outside_zero_to_one_and_an_unknown_method_are_refused():
    train, labels = clusters(40, 1)
    ref = build(train, labels, train, 2)
    with pytest.raises(ValueError, match="accept share 1.5"):
        ref.threshold(1.5)
    with pytest.raises(ValueError, match="unknown scoring method 'vim'"):
        ref.score(train, "vim")


def test_surprise_is_minus_log_of_the_share_of_validation_scores_at_least_as_far():
    val = np.sort(np.random.default_rng(4).exponential(1.0, 4000))  # share at least s: exp(-s)
    s = np.array([0.0, 0.7, 1.5, 2.3, 3.0, 5.0, 12.0])  # the last two past every validation score but a few
    assert surprise(val, s) == pytest.approx(s, abs=0.12, rel=0.05)  # empirical below the tail, the fitted tail beyond
    far = surprise(val, np.array([val[-1], val[-1] + 1, val[-1] + 10]))
    assert far[0] < far[1] < far[2]  # no tie at 1/n past the farthest validation scan


def test_the_combined_score_is_the_mean_of_the_two_surprises_whatever_each_distance_s_scale():
    train, labels = clusters(400, 1)
    val, _ = clusters(200, 2)
    ref = build(train, labels, val, 2, k=1)
    probe = np.r_[clusters(20, 3)[0], RNG.normal(0, 1, (5, 16)) * 3 + np.r_[[-6.0] * 16]]
    expected = (surprise(ref.val_scores["knn"], ref.score(probe, "knn"))
                + surprise(ref.val_scores["mahalanobis"], ref.score(probe, "mahalanobis"))) / 2
    assert ref.score(probe, "combined") == pytest.approx(expected, rel=1e-6)
    ref.val_scores["mahalanobis"] = ref.val_scores["mahalanobis"] * 1000  # a distance in other units...
    ref.precision = ref.precision * 1e6
    assert ref.score(probe, "combined") == pytest.approx(expected, rel=1e-4)  # ...changes nothing


def test_combined_lets_about_the_chosen_share_through_and_catches_what_only_one_distance_sees():
    train, labels = clusters(600, 1)
    val, _ = clusters(400, 2)
    ref = build(train, labels, val, 2, k=1)
    threshold = ref.threshold(0.95, "combined")
    assert np.mean(ref.score(val, "combined") <= threshold) == pytest.approx(0.95, abs=0.01)
    fresh, _ = clusters(500, 3)
    assert np.mean(ref.score(fresh, "combined") > threshold) < 0.08
    # a class's own features scaled up 3x: the same direction, so k-NN on unit vectors sees a typical
    # scan, while the Mahalanobis distance is far past anything in validation
    scaled = 3 * clusters(10, 4)[0]
    assert np.all(ref.score(scaled, "knn") <= ref.threshold(0.95, "knn"))
    assert np.all(ref.score(scaled, "combined") > threshold)
    outliers = RNG.normal(0, 1, (50, 16)) * 3 + np.r_[[-6.0] * 16]
    assert np.all(ref.score(outliers, "combined") > threshold)


def test_a_reference_without_combined_validation_scores_lets_at_least_the_share_through():
    """Files made before `combined` keep only each distance's sorted scores: the threshold is where
    each distance alone would stand at its own, which lets more through, never fewer."""
    train, labels = clusters(600, 1)
    val, _ = clusters(400, 2)
    ref = build(train, labels, val, 2, k=1)
    exact = ref.threshold(0.95, "combined")
    del ref.val_scores["combined"]
    assert ref.threshold(0.95, "combined") == pytest.approx(-np.log(0.05)) and ref.threshold(0.95, "combined") > exact
    assert np.mean(ref.score(val, "combined") <= ref.threshold(0.95, "combined")) >= 0.95


def test_blocks_is_the_mean_of_three_surprises_with_the_block_before_s_mahalanobis_distance():
    """A scan typical of the last block's features but unlike the block before's is caught by blocks
    and by mahalanobis_previous, not by the last block's distances alone."""
    train, labels = clusters(600, 1)
    val, _ = clusters(400, 2)
    before = {n: np.c_[f, f[:, :4] * 2] for n, f in (("train", train), ("val", val))}  # a second layer's features
    ref = build({"pooled": train, "previous": before["train"]}, labels,
                {"pooled": val, "previous": before["val"]}, 2, k=1)
    probe, _ = clusters(30, 3)
    odd = {"pooled": probe, "previous": np.c_[probe, -probe[:, :4] * 2]}  # the block before breaks its pattern
    expected = np.mean([surprise(ref.val_scores[m], ref.score(odd, m))
                        for m in ("knn", "mahalanobis", "mahalanobis_previous")], axis=0)
    assert ref.score(odd, "blocks") == pytest.approx(expected, rel=1e-6)
    assert np.all(ref.score(odd, "blocks") > ref.threshold(0.95, "blocks"))
    assert np.all(ref.score(odd, "mahalanobis_previous") > ref.threshold(0.95, "mahalanobis_previous"))
    assert np.mean(ref.score(odd, "combined") > ref.threshold(0.95, "combined")) < 0.2
    typical = {"pooled": probe, "previous": np.c_[probe, probe[:, :4] * 2]}
    assert np.mean(ref.score(typical, "blocks") > ref.threshold(0.95, "blocks")) < 0.15
    assert np.mean(ref.score({"pooled": val, "previous": before["val"]}, "blocks")
                   <= ref.threshold(0.95, "blocks")) == pytest.approx(0.95, abs=0.01)
