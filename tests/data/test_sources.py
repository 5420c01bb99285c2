"""Sources: several labelled collections with class maps, grouped and split together."""
import numpy as np
import pytest

from tests.synthetic import write_dataset, write_two_sources
from tumord.data.images import Preprocess
from tumord.data.sources import Source, load_sources, split_sources, unseen
from tumord.data.split import group_split

CLASSES = ["normal", "tumor"]


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    """Source a (normal/tumor) and source b (notumor/glioma), b holding resized copies of 10 of a's scans."""
    root = write_two_sources(tmp_path_factory.mktemp("sources"), (30, 30), copies=5)
    sources = [Source.of("a", root / "a"), Source.of("b", root / "b", class_map={"notumor": "normal", "glioma": "tumor"})]
    return load_sources(sources, CLASSES, Preprocess(size=32), root / "cache")


def test_class_maps_and_groups_span_sources(two_sources):
    d = two_sources
    assert len(d.of("a")) == 60 and len(d.of("b")) == 70
    copies = [i for i, f in enumerate(d.files) if f.name.startswith("copy_")]
    assert all(d.labels[i] == (1 if d.files[i].parent.name == "glioma" else 0) for i in copies)
    for i in copies:  # each copy is in its original's group, across the two sources
        original = d.files.index(d.files[0].parents[2] / "a" / ("tumor" if d.labels[i] else "normal")
                                 / f"{'tumor' if d.labels[i] else 'normal'}_{int(d.files[i].stem[-1]):03d}.png")
        assert d.groups[i] == d.groups[original]


def test_each_source_gets_its_own_parts_and_no_group_is_split(two_sources):
    d = two_sources
    split = split_sources(d.labels, d.source, d.groups, 0.2, 0.2, seed=0)
    for name in d.names:
        for part in ("train", "val", "test"):
            idx = np.intersect1d(d.of(name), split[part])
            assert len(idx) > 0 and set(d.labels[idx]) == {0, 1}
    where = {}
    for part, idx in split.items():
        for i in idx:
            assert where.setdefault(d.groups[i], part) == part


def test_one_source_splits_exactly_as_before():
    rng = np.random.default_rng(3)
    labels, groups = rng.integers(0, 2, 300), rng.integers(0, 120, 300)
    a = split_sources(labels, np.zeros(300, int), groups, 0.15, 0.15, seed=4)
    b = group_split(labels, groups, 0.15, 0.15, seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in b)


def test_scans_seen_in_training_are_left_out_of_the_other_source(two_sources):
    d = two_sources
    kept = unseen(d.thumbs, d.of("b"), d.of("a"))
    names = {d.files[i].name for i in kept}
    assert not any(n.startswith("copy_") for n in names)
    assert len(kept) >= 50  # (generated scans look alike: a few others are near-duplicates by chance)


def test_a_folder_no_class_maps_to_is_named(tmp_path):
    write_dataset(tmp_path / "c", per_class=2, size=32, classes=("notumor", "glioma"))
    with pytest.raises(ValueError, match="glioma"):
        Source.of("c", tmp_path / "c", class_map={"notumor": "normal"}).list(CLASSES)
