"""Reading any common scan format into the one preprocessing result."""
import cv2
import numpy as np
import pytest

from tumord.data.images import ImageError, Preprocess, read_scan


@pytest.fixture
def gray():
    rng = np.random.default_rng(0)
    img = np.zeros((120, 90), np.uint8)
    cv2.circle(img, (45, 60), 30, 200, -1)
    return np.clip(img + rng.integers(0, 20, img.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("suffix, mode", [(s, m) for s in (".png", ".jpg", ".tif", ".bmp")
                                          for m in ("gray", "bgr", "bgra") if (s, m) != (".jpg", "bgra")])
def test_formats_and_channels_give_the_same_image(tmp_path, gray, suffix, mode):
    """Gray, RGB and RGBA files in PNG/JPEG/TIFF/BMP all become the same square gray image."""
    img = {"gray": gray, "bgr": cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR),
           "bgra": cv2.cvtColor(gray, cv2.COLOR_GRAY2BGRA)}[mode]
    path = tmp_path / f"scan{suffix}"
    assert cv2.imwrite(str(path), img)
    out = read_scan(path, Preprocess(size=64))
    assert out.shape == (64, 64) and out.dtype == np.uint8
    reference = cv2.resize(gray, (64, 64), interpolation=cv2.INTER_AREA)
    tol = 6 if suffix == ".jpg" else 1  # JPEG is lossy
    assert np.abs(out.astype(int) - reference).mean() < tol


def test_sixteen_bit_scans_are_stretched_to_eight_bits(tmp_path, gray):
    """A 16-bit scan that uses 12 bits fills the 8-bit range instead of turning black."""
    path = tmp_path / "scan16.png"
    cv2.imwrite(str(path), gray.astype(np.uint16) * 16)
    out = read_scan(path, Preprocess(size=32))
    g = gray.astype(np.float32)
    stretched = np.round((g - g.min()) * 255 / (g.max() - g.min())).astype(np.uint8)
    reference = cv2.resize(stretched, (32, 32), interpolation=cv2.INTER_AREA)
    assert np.abs(out.astype(int) - reference).max() <= 1


@pytest.mark.parametrize("content, reason", [(b"", "empty"), (b"not an image at all", "not a readable image")])
def test_unreadable_files_name_the_file_and_the_reason(tmp_path, content, reason):
    """A broken file raises ImageError that names it."""
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=reason) as e:
        read_scan(path, Preprocess(size=32))
    assert "broken.png" in str(e.value)


def test_preprocessing_settings_round_trip_and_refuse_what_they_do_not_know():
    """A model file whose preprocessing has a step this code lacks is refused, not misread."""
    pre = Preprocess(size=96, interpolation="linear")
    assert Preprocess.from_dict(pre.to_dict()) == pre
    with pytest.raises(ValueError, match="unknown preprocessing settings.*'skull_strip'"):
        Preprocess.from_dict({"size": 96, "skull_strip": True})


def test_head_crop_and_normalization_are_recorded_only_when_used():
    """Models and caches made without them keep their identity; with them, they round-trip."""
    assert "crop" not in Preprocess(size=96).to_dict() and "normalize" not in Preprocess(size=96).to_dict()
    pre = Preprocess(size=96, crop=True, normalize="head_percentile")
    assert Preprocess.from_dict(pre.to_dict()) == pre
