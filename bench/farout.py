"""Generated inputs that are not brain MR slices, for measuring abstention (bench only).

Each kind is a list of decoded images as a reader would hand them over (uint8, gray or BGR),
so the input checks see colour and size as they are. `in_source` scans (uint8 gray) are the
starting point of the 'wrong modality' kinds.
"""
from __future__ import annotations

import cv2
import numpy as np

# scikit-image's bundled photographs (pip install -r bench/requirements.txt)
PHOTOS = ["astronaut", "camera", "coffee", "chelsea", "rocket", "cat", "coins", "moon", "page", "text", "clock",
          "horse", "hubble_deep_field", "immunohistochemistry", "retina", "brick", "grass", "gravel", "logo",
          "colorwheel", "checkerboard", "eagle", "grass", "microaneurysms", "shepp_logan_phantom"]


def _as_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == bool:
        return img.astype(np.uint8) * 255
    if img.dtype != np.uint8:
        img = img.astype(np.float64)
        img = (img - img.min()) / max(img.max() - img.min(), 1e-9) * 255
        return img.astype(np.uint8)
    return img


def photos() -> list[np.ndarray]:
    import skimage.data

    out = []
    for name in dict.fromkeys(PHOTOS):
        try:
            img = _as_uint8(getattr(skimage.data, name)())
        except Exception:  # some need a download (pooch); skip those rather than fetch
            continue
        if img.ndim == 3:
            img = cv2.cvtColor(img[:, :, :3], cv2.COLOR_RGB2BGR)
        out.append(img)
    return out


def noise(rng: np.random.Generator, n: int = 40, size: int = 256) -> list[np.ndarray]:
    uniform = [rng.integers(0, 256, (size, size), dtype=np.uint8) for _ in range(n // 2)]
    gaussian = [np.clip(rng.normal(m, s, (size, size)), 0, 255).astype(np.uint8)
                for m, s in [(30, 10), (128, 40), (60, 60), (200, 20)] * (n // 8)]
    smooth = [cv2.GaussianBlur(rng.integers(0, 256, (size, size), dtype=np.uint8), (0, 0), 4) for _ in range(n // 4)]
    return uniform + gaussian + smooth


def blank(rng: np.random.Generator, size: int = 256) -> list[np.ndarray]:
    flat = [np.full((size, size), v, np.uint8) for v in (0, 5, 30, 128, 255)]
    return flat + [np.clip(v + rng.normal(0, 2, (size, size)), 0, 255).astype(np.uint8) for v in (0, 40, 128, 220)]


def text(n: int = 20, size: int = 256) -> list[np.ndarray]:
    out = []
    for i in range(n):
        dark = i % 2 == 1
        img = np.full((size, size), 0 if dark else 255, np.uint8)
        for j in range(8):
            cv2.putText(img, f"Series {i * 7 + j}  slice {j}/24", (4, 28 + j * 30), cv2.FONT_HERSHEY_SIMPLEX,
                        0.5 + 0.15 * (i % 3), 255 if dark else 0, 1 + i % 2)
        out.append(img)
    return out


def colour(rng: np.random.Generator, in_source: np.ndarray) -> list[np.ndarray]:
    """Colour noise, colour gradients, and scans with a colour overlay (a false-colour map)."""
    out = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(5)]
    ramp = np.linspace(0, 255, 256, dtype=np.uint8)
    out += [np.dstack([np.tile(ramp, (256, 1)), np.tile(ramp[:, None], (1, 256)), np.full((256, 256), v, np.uint8)])
            for v in (0, 128, 255)]
    out += [cv2.applyColorMap(img, cv2.COLORMAP_JET) for img in in_source[:12]]
    return out


def wrong_modality(in_source: np.ndarray) -> dict[str, list[np.ndarray]]:
    """Scans changed the way another modality or a wrong export would: inverted (a negative),
    CT-like windowing (soft tissue crushed, bright bone-like rim), and a steep gamma."""
    windowed = [np.clip((img.astype(np.float32) - 40) * 3.0, 0, 255).astype(np.uint8) for img in in_source]
    gamma = [(255 * (img / 255.0) ** 3).astype(np.uint8) for img in in_source]
    return {"inverted": [255 - img for img in in_source], "ct_window": windowed, "gamma_3": gamma}


def all_kinds(rng: np.random.Generator, in_source: np.ndarray) -> dict[str, list[np.ndarray]]:
    """in_source: uint8 gray scans from the held-out test split (60 are used per derived kind)."""
    kinds = {"photos": photos(), "noise": noise(rng), "blank": blank(rng), "text": text(),
             "colour": colour(rng, in_source)}
    kinds.update(wrong_modality(in_source[:60]))
    return kinds
