"""On-the-fly augmentation of a uint8 image batch (N, H, W) with OpenCV.

Per image: a horizontal flip (p = 0.5), rotation, scaling and shift combined into ONE
cv2.warpAffine (one interpolation, so the image is blurred once, not three times; the area
moved in from outside is black, like an MRI background), then brightness and contrast jitter.
All random numbers are drawn up front from the given generator, so a seed fixes the result.
"""
from __future__ import annotations

import cv2
import numpy as np


def _affine(flip: bool, angle: float, scale: float, tx: float, ty: float, h: int, w: int) -> np.ndarray:
    """2x3 matrix: mirror (if flip), then rotate/scale about the centre, then shift (pixels)."""
    centre = ((w - 1) / 2.0, (h - 1) / 2.0)
    m = np.vstack([cv2.getRotationMatrix2D(centre, angle, scale), [0.0, 0.0, 1.0]])
    if flip:
        m = m @ np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    m[:2, 2] += (tx, ty)
    return m[:2]


def augment_batch(images: np.ndarray, rng: np.random.Generator, *, flip: bool = True, rotate_deg: float = 10.0,
                  scale: float = 0.1, shift: float = 0.08, brightness: float = 0.1,
                  contrast: float = 0.1) -> np.ndarray:
    """Returns a new augmented uint8 batch; `images` is not modified.

    rotate_deg: angle uniform in +-rotate_deg; scale: zoom uniform in 1 +- scale; shift: translation
    uniform in +-shift of the width/height; brightness: gain uniform in 1 +- brightness (black stays
    black); contrast: factor uniform in 1 +- contrast, about the image's mean.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"expected a uint8 batch (N, H, W), got {images.dtype} {images.shape}")
    n, h, w = images.shape
    flips = (rng.random(n) < 0.5) & flip
    angles = rng.uniform(-rotate_deg, rotate_deg, n)
    scales = 1.0 + rng.uniform(-scale, scale, n)
    shifts = rng.uniform(-shift, shift, (n, 2)) * (w, h)
    gains = 1.0 + rng.uniform(-brightness, brightness, n)
    contrasts = 1.0 + rng.uniform(-contrast, contrast, n)

    jitter = brightness != 0 or contrast != 0
    levels = np.arange(256, dtype=np.float64)
    out = np.empty_like(images)
    for i in range(n):
        if angles[i] == 0 and scales[i] == 1 and not shifts[i].any():
            img = images[i, :, ::-1] if flips[i] else images[i]  # exact, and no interpolation
        else:
            m = _affine(flips[i], angles[i], scales[i], shifts[i, 0], shifts[i, 1], h, w)
            img = cv2.warpAffine(np.ascontiguousarray(images[i]), m, (w, h), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        if jitter:
            # y = contrast * (gain * x - mean) + mean, mean being that of gain * x; as a 256-entry
            # lookup table, so the image itself is touched once
            mean = gains[i] * float(img.mean())
            lut = np.clip(np.rint(levels * (contrasts[i] * gains[i]) + (1.0 - contrasts[i]) * mean), 0, 255)
            img = cv2.LUT(np.ascontiguousarray(img), lut.astype(np.uint8))
        out[i] = img
    return out
