"""The decoded-image cache: reused while files are unchanged, refreshed when one changes."""
import os

import numpy as np

from tests.synthetic import write_dataset
from tumord.data.cache import load_images
from tumord.data.dataset import list_dataset
from tumord.data.images import Preprocess, read_scan


def test_cache_is_reused_and_follows_changed_files(tmp_path):
    """A second run serves the cache; a rewritten file is decoded again, the rest is not."""
    listing = list_dataset(write_dataset(tmp_path / "data", per_class=5))
    pre, cache = Preprocess(size=24), tmp_path / "cache"
    first, _ = load_images(listing.files, pre, cache)
    assert isinstance(first, np.ndarray) and first.dtype == np.uint8 and first.shape == (10, 24, 24)
    second, _ = load_images(listing.files, pre, cache)
    assert isinstance(second, np.memmap)  # served from disk, not decoded
    np.testing.assert_array_equal(first, second)
    changed = listing.files[3]
    changed.write_bytes(listing.files[7].read_bytes())
    os.utime(changed, ns=(1, 1))
    third, _ = load_images(listing.files, pre, cache)
    np.testing.assert_array_equal(third[3], read_scan(listing.files[7], pre))
    np.testing.assert_array_equal(np.delete(third, 3, 0), np.delete(first, 3, 0))
