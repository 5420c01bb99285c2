"""Feature-distance scores and their thresholds, on features whose answer is known."""
from __future__ import annotations

import numpy as np
import pytest

from tumord.nn.feature_distance import build, knn_distance, normalize

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
