"""Durable, atomic file writes: readers see the old file or the new one, never a part of either.

The one home for them: a file is written under a temporary name in its own folder (prefix
TEMP_PREFIX, so whatever a killed process leaves is recognised and swept), fsynced, renamed over
its name, and the folder fsynced so that the rename itself survives a power cut.
"""
from __future__ import annotations

import os
import tempfile
from concurrent.futures import Executor
from pathlib import Path
from typing import Callable, Iterable

TEMP_PREFIX = ".tumord-tmp."  # our temporary files; anything left with it after a crash is swept

# mkstemp creates 0600 files; verdicts and models are read by other accounts, so give new files
# the mode an ordinary open() would (0666 less the umask). Read once: os.umask can only be read by setting it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_MODE = 0o666 & ~_UMASK


def fsync_dir(directory: str | os.PathLike) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(path: Path, write: Callable) -> Path:
    """A fsynced temporary file beside `path`, filled by write(binary file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _MODE)
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def write_atomic(path: str | os.PathLike, data: bytes | str | Callable) -> Path:
    """Writes `data` (bytes, text, or a function writing to a binary file) to `path` atomically."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    tmp = _write_temp(path, data if callable(data) else lambda f: f.write(data))
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return path


def write_many(items: Iterable[tuple[Path, bytes]], pool: Executor | None = None) -> None:
    """Writes several files atomically with one fsync per folder at the end; with a pool the files'
    fsyncs run in parallel, so the file system's journal commits them together."""
    items = [(Path(p), d) for p, d in items]

    def temp(item):
        path, data = item
        return _write_temp(path, lambda f: f.write(data))

    temps = list(pool.map(temp, items) if pool is not None else map(temp, items))
    for tmp, (path, _) in zip(temps, items):
        os.replace(tmp, path)
    for folder in {path.parent for path, _ in items}:
        fsync_dir(folder)


def sweep_temporaries(*folders: Path) -> list[Path]:
    """Removes temporary files a killed process left behind in these folders; returns them."""
    swept = []
    for folder in folders:
        for p in Path(folder).glob(f"{TEMP_PREFIX}*"):
            p.unlink(missing_ok=True)
            swept.append(p)
    return swept
