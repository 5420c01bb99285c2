"""One scan from file to model input: the checks before reading, and the checked decode.

Each failure is a reason in words for a person (or an `ImageError` carrying one); the caller
records it as the scan's error, or (the service) tries again later, and goes on with the next scan.
"""
from __future__ import annotations

import hashlib
import os
import stat

import numpy as np

from tumord.abstain.checks import InputChecks
from tumord.data.images import ImageError, Preprocess, decode, resize, to_gray_uint8
from tumord.judge import safety


def file_problem(path: str, lst: os.stat_result, root: str | None, max_bytes: int) -> tuple[str, bool] | None:
    """Why the file at `path` (lstat `lst`) must not be read, and whether only because it may not
    be read now (permission denied); None if it may be read. A link must stay inside `root` (the
    folder being watched or walked); with root None any link is followed."""
    if stat.S_ISDIR(lst.st_mode):
        return "is a folder, not an image file", False
    if stat.S_ISLNK(lst.st_mode) and root is not None:
        reason = safety.outside_link(path, root)
        if reason:
            return reason, False
    try:
        st = os.stat(path)
    except OSError as e:
        return f"cannot be read ({e.strerror})", isinstance(e, PermissionError)
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file (a device, pipe or socket)", False
    if st.st_size > max_bytes:
        return f"is {st.st_size / 2**20:.0f} MiB; the limit is {max_bytes / 2**20:.0f} MiB", False
    return None


def read_hashed(path: str) -> tuple[bytes, str]:
    """The file's bytes and their SHA-256 (hex), which names its verdict; raises OSError."""
    with open(path, "rb") as f:
        data = f.read()
    return data, hashlib.sha256(data).hexdigest()


def decode_checked(data: bytes, shown: str, preprocess: Preprocess, max_pixels: int,
                   checks: InputChecks) -> tuple[np.ndarray, list[str]]:
    """The bytes of the scan `shown` (its suffix already checked) as model input, with the input
    checks' reasons to abstain; raises ImageError saying why they cannot be decoded."""
    try:
        safety.check_image(data, shown, max_pixels)
        raw = decode(data, shown)
        reasons = checks.reasons(raw)
        return resize(to_gray_uint8(raw, shown), preprocess), reasons
    except ImageError:
        raise
    except Exception as e:  # a decoder failing in some new way is still just a bad file
        raise ImageError(shown, f"could not be decoded ({type(e).__name__}: {e})") from e
