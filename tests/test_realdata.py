"""Short checks on the real datasets in ../shared/datasets; skipped, saying so, where they are absent."""
from pathlib import Path

import numpy as np
import pytest

from tumord.data.cache import load_images
from tumord.data.dataset import list_dataset
from tumord.data.dedup import near_duplicate_groups
from tumord.data.images import Preprocess
from tumord.data.split import group_split

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
BINARY = DATASETS / "brain-tumor"
needs_data = pytest.mark.skipif(not BINARY.is_dir(), reason=f"real data not found at {DATASETS}")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """Every third image of the binary set, decoded at 64 px (a few seconds)."""
    listing = list_dataset(BINARY)
    files, labels = listing.files[::3], np.array(listing.labels[::3])
    images, thumbs = load_images(files, Preprocess(size=64), tmp_path_factory.mktemp("cache"))
    return files, labels, images, thumbs


@needs_data
def test_every_real_image_format_decodes(sample):
    """JPEG, PNG and TIFF scans of all sizes decode to non-blank 64x64 gray images."""
    files, _, images, _ = sample
    assert {f.suffix.lower() for f in files} >= {".jpg", ".tif"}
    assert images.shape[1:] == (64, 64)
    assert (images.reshape(len(images), -1).std(axis=1) > 5).all()


@needs_data
def test_near_duplicates_are_common_and_never_cross_classes(sample):
    """Many real scans have a near-identical twin; no group mixes tumor and normal."""
    _, labels, _, thumbs = sample
    groups = near_duplicate_groups(thumbs)
    _, counts = np.unique(groups, return_counts=True)
    assert (counts > 1).sum() > 0.1 * len(counts)
    for g in np.unique(groups):
        assert len(set(labels[groups == g])) == 1


@needs_data
def test_real_split_keeps_twins_apart_from_evaluation(sample):
    """No image in the test split has a near-duplicate in the training split."""
    _, labels, _, thumbs = sample
    groups = near_duplicate_groups(thumbs)
    split = group_split(labels, groups, 0.15, 0.15, seed=0)
    from tumord.data.dedup import signatures

    sig = signatures(thumbs)
    cross = sig[split["test"]] @ sig[split["train"]].T
    assert cross.max() < 0.95
