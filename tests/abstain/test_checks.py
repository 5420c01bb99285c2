"""The input checks: each refuses what no brain MR slice looks like, and lets a scan through."""
from __future__ import annotations

import cv2
import numpy as np

from tests.synthetic import scan
from tumord.abstain.checks import InputChecks

CHECKS = InputChecks()
RNG = np.random.default_rng(0)


def test_a_generated_scan_passes_in_gray_8_and_16_bit_and_saved_as_rgb():
    img = scan(True, RNG, 128)
    assert CHECKS.reasons(img) == []
    assert CHECKS.reasons(img.astype(np.uint16) * 257) == []
    assert CHECKS.reasons(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)) == []
    assert CHECKS.reasons(cv2.cvtColor(img, cv2.COLOR_GRAY2BGRA)) == []


def test_blank_and_nearly_constant_frames_are_refused():
    for frame in (np.zeros((128, 128), np.uint8), np.full((128, 128), 200, np.uint8),
                  np.clip(100 + RNG.normal(0, 1.5, (128, 128)), 0, 255).astype(np.uint8),
                  np.full((128, 128), 40000, np.uint16)):
        (reason,) = CHECKS.reasons(frame)
        assert reason.startswith("blank or nearly constant")


def test_a_small_image_is_refused_and_the_limit_is_a_setting():
    img = scan(False, RNG, 48)
    assert CHECKS.reasons(img) == ["too small (48x48 pixels; shorter side under 64)"]
    assert InputChecks(min_side=32).reasons(img) == []


def test_a_colour_image_is_refused_but_a_gray_one_with_jpeg_chroma_noise_is_not():
    gray = cv2.cvtColor(scan(True, RNG, 128), cv2.COLOR_GRAY2BGR)
    ok, jpeg = cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, 60])
    assert CHECKS.reasons(cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED)) == []
    tinted = gray.copy()
    tinted[:, :, 2] = np.clip(tinted[:, :, 2].astype(int) + 60, 0, 255)  # red cast: a photo, not a scan
    (reason,) = CHECKS.reasons(tinted)
    assert reason.startswith("a colour image")


def test_an_extreme_aspect_ratio_is_refused():
    wide = cv2.resize(scan(True, RNG, 128), (400, 128))
    (reason,) = CHECKS.reasons(wide)
    assert reason == "extreme aspect ratio (3.1:1 > 2.5:1)"


def test_a_modality_other_than_mr_is_refused_when_a_reader_knows_it():
    img = scan(True, RNG, 128)
    assert CHECKS.reasons(img, modality="MR") == []
    assert CHECKS.reasons(img, modality="CT") == ["modality CT, not MR"]


def test_several_failures_give_several_reasons():
    assert len(CHECKS.reasons(np.zeros((20, 100, 3), np.uint8))) == 3  # blank, small, aspect
