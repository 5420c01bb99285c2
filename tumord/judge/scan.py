"""One scan from file to model input: the checks before reading, and the checked decode.

Each failure is an `ImageError` or a reason in words for a person; the caller records it as the
scan's error and goes on with the next scan.
"""
from __future__ import annotations

import os
import stat

import numpy as np

from tumord.data.images import ImageError, Preprocess, decode_gray, resize
from tumord.judge import safety


def file_problem(path: str, lst: os.stat_result, root: str | None, max_bytes: int) -> str | None:
    """Why the file at `path` (lstat `lst`) must not be read, or None. A link must stay inside
    `root` (the folder being watched or walked); with root None any link is followed."""
    if stat.S_ISDIR(lst.st_mode):
        return "is a folder, not an image file"
    if stat.S_ISLNK(lst.st_mode) and root is not None:
        reason = safety.outside_link(path, root)
        if reason:
            return reason
    try:
        st = os.stat(path)
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file (a device, pipe or socket)"
    if st.st_size > max_bytes:
        return f"is {st.st_size / 2**20:.0f} MiB; the limit is {max_bytes / 2**20:.0f} MiB"
    return None


def decode_checked(data: bytes, shown: str, preprocess: Preprocess, max_pixels: int) -> np.ndarray:
    """The bytes of the scan `shown` as model input; raises ImageError saying why they cannot be."""
    try:
        safety.check_suffix(shown)
        safety.check_image(data, shown, max_pixels)
        return resize(decode_gray(data, shown), preprocess)
    except ImageError:
        raise
    except Exception as e:  # a decoder failing in some new way is still just a bad file
        raise ImageError(shown, f"could not be decoded ({type(e).__name__}: {e})") from e
