"""Scans uploaded through the web page, written into the input folder and nowhere else.

The name a client sends is only a hint: its last component is kept, every character but letters,
digits and `._-()` and space becomes `_`, leading dots go (they would hide it from the service),
and the suffix must be an image type. The bytes go to a hidden temporary file in input/ (the
service ignores names starting with a dot), are fsynced, then linked to the final name (link(2)
never replaces a file: a taken name gets -2, -3, ...), and the temporary name is removed.
"""
from __future__ import annotations

import os
import secrets
import threading
import unicodedata
from pathlib import Path

from tumord.atomic import fsync_dir
from tumord.data.images import IMAGE_SUFFIXES

TEMP_PREFIX = ".tumord-upload."
CHUNK = 1 << 20
MAX_STEM = 100


class UploadError(ValueError):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def safe_name(hint: str) -> str:
    """A plain file name from whatever the client sent, or UploadError saying what is wrong."""
    name = unicodedata.normalize("NFC", hint.replace("\\", "/").rsplit("/", 1)[-1])
    name = "".join(c if c.isalnum() or c in "._-() " else "_" for c in name).strip(" .")
    stem, suffix = os.path.splitext(name)
    if suffix.lower() not in IMAGE_SUFFIXES:
        raise UploadError(400, f"{hint!r} is not an image file name; expected one ending in "
                               f"{', '.join(IMAGE_SUFFIXES)}")
    return (stem[:MAX_STEM].rstrip(" .") or "scan") + suffix.lower()


class Uploads:
    def __init__(self, input_folder: Path, max_bytes: int):
        self.input, self.max_bytes = input_folder, max_bytes
        self.lock = threading.Lock()  # one link at a time: two uploads never pick the same free name

    def sweep(self) -> list[Path]:
        """Removes temporary files of uploads a killed process left."""
        gone = list(self.input.glob(f"{TEMP_PREFIX}*.tmp"))
        for p in gone:
            p.unlink(missing_ok=True)
        return gone

    def save(self, hint: str, length: int | None, body) -> str:
        """Streams `length` bytes from `body` into input/; returns the name the scan got."""
        name = safe_name(hint)
        if length is None:
            raise UploadError(411, "the upload needs a Content-Length")
        if length <= 0:
            raise UploadError(400, f"{name}: the file is empty")
        if length > self.max_bytes:
            raise UploadError(413, f"{name} is {length / 2**20:.1f} MiB; the limit is "
                                   f"{self.max_bytes / 2**20:.0f} MiB (watch.max_bytes)")
        tmp = self.input / f"{TEMP_PREFIX}{secrets.token_hex(8)}.tmp"
        try:
            with open(tmp, "xb") as f:
                left = length
                while left:
                    chunk = body.read(min(CHUNK, left))
                    if not chunk:
                        raise UploadError(400, f"{name}: the upload ended after {length - left} of {length} bytes")
                    f.write(chunk)
                    left -= len(chunk)
                f.flush()
                os.fsync(f.fileno())
            with self.lock:
                final = self._link(tmp, name)
            return final
        finally:
            tmp.unlink(missing_ok=True)
            fsync_dir(self.input)

    def _link(self, tmp: Path, name: str) -> str:
        stem, suffix = os.path.splitext(name)
        for n in range(1, 1000):
            candidate = name if n == 1 else f"{stem}-{n}{suffix}"
            try:
                os.link(tmp, self.input / candidate)
                return candidate
            except FileExistsError:
                continue
        raise UploadError(409, f"{name}: too many files of this name are waiting in the input folder")
