"""OpenCV batch augmentation: shape, determinism, no-op and flip behaviour."""
import numpy as np
import pytest

from tumord.data.augment import augment_batch

NOTHING = dict(flip=False, rotate_deg=0.0, scale=0.0, shift=0.0, brightness=0.0, contrast=0.0)


def _batch(n=8, h=32, w=24):
    rng = np.random.default_rng(0)
    images = np.zeros((n, h, w), np.uint8)
    images[:, 6:26, 4:20] = rng.integers(30, 220, (n, 20, 16), dtype=np.uint8)  # a "head" on black
    return images


def test_shape_and_dtype_are_preserved_and_the_input_is_untouched():
    images = _batch()
    before = images.copy()
    out = augment_batch(images, np.random.default_rng(1))
    assert out.shape == images.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(images, before)
    assert not np.array_equal(out, images)


def test_deterministic_for_a_seed():
    images = _batch()
    a = augment_batch(images, np.random.default_rng(7))
    b = augment_batch(images, np.random.default_rng(7))
    c = augment_batch(images, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_no_op_when_every_amount_is_zero():
    images = _batch()
    np.testing.assert_array_equal(augment_batch(images, np.random.default_rng(0), **NOTHING), images)


def test_flip_mirrors_about_half_of_the_images_exactly():
    images = _batch(n=40)
    out = augment_batch(images, np.random.default_rng(3), **{**NOTHING, "flip": True})
    flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images)]
    kept = [np.array_equal(o, i) for o, i in zip(out, images)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 8 <= sum(flipped) <= 32


def test_geometry_and_brightness_keep_black_borders_and_contrast_keeps_content():
    images = _batch()
    out = augment_batch(images, np.random.default_rng(2), flip=False, rotate_deg=20, scale=0.2, shift=0.1,
                        brightness=0.3, contrast=0.0)
    assert out[:, 0, 0].max() == 0  # constant-0 border, and brightness is a gain, not an offset
    strong = augment_batch(images, np.random.default_rng(2), **{**NOTHING, "contrast": 0.9})
    assert not np.array_equal(strong, images)
    for a, b in zip(images, strong):  # a monotone intensity map: the image content is unchanged
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95


def test_rejects_non_uint8_batches():
    with pytest.raises(ValueError, match="uint8"):
        augment_batch(np.zeros((2, 4, 4), np.float32), np.random.default_rng(0))
