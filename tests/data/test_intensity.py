"""Head crop, per-scan intensity normalization and domain augmentation on generated scans."""
import numpy as np
import pytest

from tests.synthetic import scan
from tumord.data.domain_augment import domain_augment
from tumord.data.images import Preprocess, resize
from tumord.data.intensity import crop_to_head, head_mask, normalize_intensity


def _framed(rng, border: int = 100) -> np.ndarray:
    """A generated head in the middle of a wide black frame (as scans exported with margins are)."""
    out = np.zeros((96 + 2 * border, 96 + 3 * border), np.uint8)
    out[border : border + 96, border : border + 96] = scan(True, rng, 96)
    return out


def test_the_crop_keeps_the_head_and_drops_the_empty_frame():
    img = _framed(np.random.default_rng(0))
    crop = crop_to_head(img)
    assert crop.shape[0] == crop.shape[1] and crop.shape[0] < 96  # the head fills less than its 96x96 tile
    assert int(crop.astype(np.int64).sum()) >= 0.97 * int(img.astype(np.int64).sum())  # nothing bright is lost


def test_a_blank_frame_is_left_alone():
    blank = np.zeros((64, 64), np.uint8)
    assert head_mask(blank) is None
    assert crop_to_head(blank) is blank and normalize_intensity(blank) is blank


def test_normalization_undoes_a_scanner_gain():
    """The same scan at half the brightness normalizes to (nearly) the same image."""
    img = scan(False, np.random.default_rng(1), 96)
    dim = (img // 2).astype(np.uint8)
    a, b = normalize_intensity(img), normalize_intensity(dim)
    assert np.abs(dim.astype(int) - img).mean() > 8  # the raw scans differ a lot
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 3


def test_the_preprocessing_applies_crop_and_normalization_at_the_model_size():
    img = _framed(np.random.default_rng(2))
    plain, both = resize(img, Preprocess(size=32)), resize(img, Preprocess(size=32, crop=True, normalize="head_percentile"))
    assert plain.shape == both.shape == (32, 32)
    assert (both > 0).mean() > 2 * (plain > 0).mean()  # the head fills the frame after cropping
    assert both.max() == 255
    with pytest.raises(ValueError, match="preprocess.normalize"):
        resize(img, Preprocess(size=32, normalize="zscore"))


def test_domain_augmentation_changes_scans_reproducibly_and_can_be_off():
    batch = np.stack([scan(i % 2 == 0, np.random.default_rng(i), 64) for i in range(6)])
    kw = {"gamma": 0.4, "blur": 1.2, "noise": 0.03, "bias_field": 0.6}
    a = domain_augment(batch, np.random.default_rng(7), **kw)
    assert np.array_equal(a, domain_augment(batch, np.random.default_rng(7), **kw))
    assert a.dtype == np.uint8 and a.shape == batch.shape
    assert all(np.abs(a[i].astype(int) - batch[i]).mean() > 1 for i in range(6))
    assert np.array_equal(domain_augment(batch, np.random.default_rng(7)), batch)
