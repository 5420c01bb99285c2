"""Per-scan intensity normalization and cropping to the head, for scans from unseen scanners.

Scanners and exports differ in window, gain and how much black border surrounds the head. Both
steps find the head the same way: pixels above half the Otsu threshold of the lightly blurred
scan, the largest connected part of them. A scan without a clear head (under 2% of the frame)
is left as it is rather than cropped to noise.
"""
from __future__ import annotations

import cv2
import numpy as np

MIN_HEAD_SHARE = 0.02


def head_mask(gray: np.ndarray) -> np.ndarray | None:
    """Boolean mask of the head (largest bright connected region), or None when there is none."""
    blurred = cv2.GaussianBlur(gray, (0, 0), max(1.0, gray.shape[0] / 128))
    otsu, _ = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    fg = (blurred > max(otsu * 0.5, 4)).astype(np.uint8)
    count, comp, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if count < 2:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[largest, cv2.CC_STAT_AREA] < MIN_HEAD_SHARE * gray.size:
        return None
    return comp == largest


def crop_to_head(gray: np.ndarray, margin: float = 0.04) -> np.ndarray:
    """The square around the head (with a margin), padded with black where it leaves the frame."""
    mask = head_mask(gray)
    if mask is None:
        return gray
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    half = max(ys.max() - ys.min(), xs.max() - xs.min()) * (0.5 + margin) + 1
    top, left = int(round(cy - half)), int(round(cx - half))
    side = int(round(2 * half))
    h, w = gray.shape
    pad = max(0, -top, -left, top + side - h, left + side - w)
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        top, left = top + pad, left + pad
    return gray[top : top + side, left : left + side]


def normalize_intensity(gray: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Stretches the head's [low, high] percentiles to 0..255 (the background stays black)."""
    mask = head_mask(gray)
    values = gray[mask] if mask is not None else gray.ravel()
    lo, hi = np.percentile(values, (low, high))
    if hi - lo < 1:
        return gray
    lut = np.clip(np.rint((np.arange(256) - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)
    return cv2.LUT(np.ascontiguousarray(gray), lut)
