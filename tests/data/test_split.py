"""Near-duplicate grouping and the group-aware split."""
import cv2
import numpy as np

from tests.synthetic import scan
from tumord.data.dedup import duplicates_any_of, near_duplicate_groups
from tumord.data.split import group_split


def _thumbs(images):
    return np.stack([cv2.resize(i, (32, 32), interpolation=cv2.INTER_AREA) for i in images])


def test_resized_and_reencoded_copies_are_grouped_with_their_original():
    """A copy resized, JPEG re-encoded and slightly brightened joins its original's group."""
    rng = np.random.default_rng(0)
    originals = [scan(i % 2 == 1, rng, 128) for i in range(30)]
    copies = []
    for img in originals[:10]:
        small = cv2.resize(img, (97, 97))
        ok, jpg = cv2.imencode(".jpg", np.clip(small * 1.05, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 70])
        copies.append(cv2.resize(cv2.imdecode(jpg, 0), (128, 128)))
    groups = near_duplicate_groups(_thumbs(originals + copies))
    for k in range(10):
        assert groups[30 + k] == groups[k]
    assert len(np.unique(groups[:30])) >= 25  # distinct scans stay apart


def test_copies_of_reference_scans_are_found_and_other_scans_are_not():
    """duplicates_any_of flags the resized, re-encoded copies of reference scans only."""
    rng = np.random.default_rng(1)
    reference = [scan(i % 2 == 1, rng, 128) for i in range(10)]
    others = [scan(i % 2 == 1, rng, 128) for i in range(10)]
    copies = [cv2.resize(cv2.resize(img, (90, 90)), (128, 128)) for img in reference[:4]]
    found = duplicates_any_of(_thumbs(copies + others), _thumbs(reference))
    assert found.tolist() == [True] * 4 + [False] * 10
    assert duplicates_any_of(_thumbs(others), np.zeros((0, 32, 32), np.uint8)).tolist() == [False] * 10


def test_split_keeps_groups_together_and_is_deterministic():
    """Every group lands in one split; the same seed gives the same split; fractions are met."""
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(300), rng.integers(1, 5, 300))
    labels = (groups % 3 == 0).astype(int)
    a = group_split(labels, groups, 0.15, 0.15, seed=7)
    b = group_split(labels, groups, 0.15, 0.15, seed=7)
    c = group_split(labels, groups, 0.15, 0.15, seed=8)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["test"], c["test"])
    seen = {}
    for name, idx in a.items():
        for g in np.unique(groups[idx]):
            assert seen.setdefault(g, name) == name
    assert sorted(np.concatenate(list(a.values()))) == list(range(len(labels)))
    for cls in (0, 1):
        n = (labels == cls).sum()
        for name in ("val", "test"):
            share = (labels[a[name]] == cls).sum() / n
            assert 0.12 < share < 0.18
