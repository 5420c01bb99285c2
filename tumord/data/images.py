"""Reading scans and the one preprocessing function shared by training and inference.

A scan of any common format (JPEG, PNG, TIFF, BMP; 8- or 16-bit; gray, RGB or RGBA; any size)
becomes a square uint8 grayscale image at the model's resolution. Scaling to [0, 1] float32
happens per batch (`to_input`), so caches and queues hold 1 byte per pixel.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


class ImageError(ValueError):
    """A file that is not a usable scan; the message names the file and says why."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


@dataclass(frozen=True)
class Preprocess:
    size: int  # no default: the setting preprocess.size, or the model file's
    interpolation: str = "area"  # cv2.INTER_AREA: the right filter when shrinking
    version: int = 1  # bump when the function below changes meaning
    crop: bool = False  # crop to the head before resizing (tumord/data/intensity.py)
    normalize: str = "none"  # or "head_percentile": per-scan intensity stretch inside the head

    def to_dict(self) -> dict:
        # the newer steps are written only when used, so older models and caches keep their identity
        d = asdict(self)
        for key in ("crop", "normalize"):
            if d[key] == Preprocess.__dataclass_fields__[key].default:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        unknown = set(d) - {"size", "interpolation", "version", "crop", "normalize"}
        if unknown:  # a preprocessing step this code does not know would be skipped silently
            raise ValueError(f"unknown preprocessing settings {sorted(unknown)}; a newer tumord made this model")
        return cls(**d)


def to_gray_uint8(img: np.ndarray, path: str | Path = "<image>") -> np.ndarray:
    """Any decoded array (H,W), (H,W,3) or (H,W,4), 8/16-bit or float, to 8-bit gray."""
    if img.ndim == 3:
        channels = img.shape[2]
        if channels == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
        elif channels == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        elif channels == 1:
            img = img[:, :, 0]
        else:
            raise ImageError(path, f"has {channels} channels; expected gray, RGB or RGBA")
    if img.ndim != 2:
        raise ImageError(path, f"decoded to an array of shape {img.shape}; expected a 2-D image")
    if img.dtype == np.uint8:
        return img
    # 16-bit and float scans rarely use their full range: stretch the used range to 0..255
    img = img.astype(np.float32)
    lo, hi = float(img.min()), float(img.max())
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise ImageError(path, "contains NaN or infinite pixel values")
    if hi <= lo:
        return np.zeros(img.shape, np.uint8)
    return np.round((img - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def decode(data: bytes | np.ndarray, path: str | Path = "<image>") -> np.ndarray:
    """Decodes image bytes as stored: any depth, gray, BGR or BGRA (the input checks look at colour)."""
    buf = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if buf.size == 0:
        raise ImageError(path, "is empty (0 bytes)")
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    if img is None:
        raise ImageError(path, "is not a readable image (corrupt, truncated, or not JPEG/PNG/TIFF/BMP)")
    return img


def decode_gray(data: bytes | np.ndarray, path: str | Path = "<image>") -> np.ndarray:
    """Decodes image bytes to 8-bit gray at full resolution."""
    return to_gray_uint8(decode(data, path), path)


NORMALIZATIONS = ("none", "head_percentile")


def resize(gray: np.ndarray, pre: Preprocess) -> np.ndarray:
    """Full-resolution gray -> (size, size) uint8, with the optional head crop and normalization."""
    from tumord.data.intensity import crop_to_head, normalize_intensity

    if pre.crop:
        gray = crop_to_head(gray)
    interp = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}[pre.interpolation]
    out = cv2.resize(gray, (pre.size, pre.size), interpolation=interp)
    if pre.normalize == "head_percentile":
        out = normalize_intensity(out)
    elif pre.normalize != "none":
        raise ValueError(f"preprocess.normalize = {pre.normalize!r}; expected one of {', '.join(NORMALIZATIONS)}")
    return out


def preprocess_from_config(cfg: dict) -> Preprocess:
    p = cfg["preprocess"]
    return Preprocess(size=p["size"], crop=p["crop"], normalize=p["normalize"])


def read_decoded(path: str | Path) -> np.ndarray:
    """A file decoded as stored (see `decode`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ImageError(path, f"cannot be read ({e.strerror})") from e
    return decode(data, path)


def read_scan(path: str | Path, pre: Preprocess) -> np.ndarray:
    """The preprocessing function: file -> (size, size) uint8 gray."""
    return resize(to_gray_uint8(read_decoded(path), path), pre)
