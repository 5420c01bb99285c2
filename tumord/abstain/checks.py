"""Checks on a decoded scan before it is judged: things no brain MR slice looks like.

Each failed check is a reason to abstain, in words for a person. Defaults let every scan of the
project's two datasets through (10,503 files; see docs/abstention.md for their ranges):
- blank or nearly constant: gray-level standard deviation below `min_contrast` (0-255 scale);
- too small: the shorter side below `min_side` pixels;
- colour: mean per-pixel spread between colour channels above `max_colour` (0-255 scale);
  grayscale saved as RGB has a spread near 0, JPEG chroma noise a few levels;
- extreme aspect ratio: longer side over shorter side above `max_aspect`;
- not MR: a reader that knows the modality (DICOM's Modality tag) passes it in; any other
  modality than MR is refused. Plain image files carry none, so this check is skipped for them.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from tumord.data.images import to_gray_uint8


def colour_spread(raw: np.ndarray) -> float:
    """Mean over pixels of (largest - smallest colour channel), on a 0-255 scale; 0 for gray."""
    if raw.ndim != 3 or raw.shape[2] < 3:
        return 0.0
    c = raw[:, :, :3]
    if c.dtype not in (np.uint8, np.uint16):  # OpenCV's fast path below covers what files hold
        scale = 255.0 / np.iinfo(c.dtype).max if np.issubdtype(c.dtype, np.integer) else 255.0
        return float((c.max(axis=2).astype(np.float32) - c.min(axis=2).astype(np.float32)).mean() * scale)
    b, g, r = cv2.split(c)  # channel-wise max/min in OpenCV: 50x faster than numpy's axis=2 reductions
    spread = cv2.subtract(cv2.max(cv2.max(b, g), r), cv2.min(cv2.min(b, g), r))
    return float(cv2.mean(spread)[0] * (255.0 / np.iinfo(c.dtype).max))


def measure(raw: np.ndarray) -> dict:
    """The figures the checks compare with their limits."""
    h, w = raw.shape[:2]
    _, std = cv2.meanStdDev(to_gray_uint8(raw))
    return {"min_side": int(min(h, w)), "aspect": float(max(h, w) / max(min(h, w), 1)),
            "colour": colour_spread(raw), "contrast": float(std[0, 0])}


@dataclass(frozen=True)
class InputChecks:
    min_side: int = 64
    max_aspect: float = 2.5
    min_contrast: float = 4.0
    max_colour: float = 12.0

    @classmethod
    def from_config(cls, a: dict) -> "InputChecks":
        return cls(a["min_side"], a["max_aspect"], a["min_contrast"], a["max_colour"])

    def reasons(self, raw: np.ndarray, modality: str | None = None) -> list[str]:
        """Why this decoded image (any dtype, gray, BGR or BGRA) is not a scan to judge; [] if none."""
        m = measure(raw)
        found = []
        if modality is not None and modality.strip().upper() != "MR":
            found.append(f"modality {modality.strip() or 'unknown'}, not MR")
        if m["contrast"] < self.min_contrast:
            found.append(f"blank or nearly constant (gray-level spread {m['contrast']:.1f} < {self.min_contrast:g})")
        if m["min_side"] < self.min_side:
            found.append(f"too small ({raw.shape[1]}x{raw.shape[0]} pixels; shorter side under {self.min_side})")
        if m["colour"] > self.max_colour:
            found.append(f"a colour image (channel spread {m['colour']:.1f} > {self.max_colour:g}), not a grayscale scan")
        if m["aspect"] > self.max_aspect:
            found.append(f"extreme aspect ratio ({m['aspect']:.1f}:1 > {self.max_aspect:g}:1)")
        return found
