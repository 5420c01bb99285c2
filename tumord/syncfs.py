"""One syncfs(2) for many files: everything written on a file system made durable by one call.

An fsync per file costs a system call, a journal commit and the caller's share of the write-back
for each file; syncfs(fd) writes back and commits the whole file system the fd is on, once, for
any number of files and folders. It is trusted only where it is known to keep that promise:

- Linux 5.8 or later: before, syncfs returned 0 even when writing back failed (EIO);
- a local file system whose syncfs is the kernel's own (ext2/3/4, XFS, Btrfs, F2FS; tmpfs, where
  nothing is durable and every sync is a no-op). Network and FUSE file systems may return before
  the server or daemon has the data, so their folders keep an fsync each.

It also writes back other programs' unwritten data on that file system (which the kernel would
write within half a minute anyway), so one call may wait longer than the fsyncs it replaces when
another program has just written much; the write-back itself runs in the kernel's flusher threads.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# statfs(2) f_type of the file systems whose syncfs is trusted (linux/magic.h)
TRUSTED = {0xEF53: "ext4", 0x58465342: "xfs", 0x9123683E: "btrfs", 0xF2F52010: "f2fs", 0x01021994: "tmpfs"}


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        release = tuple(int(x) for x in os.uname().release.split(".")[:2])
    except ValueError:
        return None
    if release < (5, 8):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        return libc if hasattr(libc, "syncfs") and hasattr(libc, "statfs") else None
    except OSError:
        return None


_LIBC = _libc()
_trusted: dict[int, bool] = {}  # st_dev -> whether syncfs is trusted there


def _file_system_type(folder: str) -> int | None:
    buf = ctypes.create_string_buffer(256)  # struct statfs (120 bytes on 64-bit Linux); f_type first
    if _LIBC.statfs(os.fsencode(folder), buf) != 0:
        return None
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def trusted(folder: str | os.PathLike) -> bool:
    """Whether one syncfs makes what was written under `folder` durable (see the module docstring)."""
    if _LIBC is None:
        return False
    dev = os.stat(folder).st_dev
    if dev not in _trusted:
        _trusted[dev] = _file_system_type(os.fspath(folder)) in TRUSTED
    return _trusted[dev]


def syncfs(folder: str | os.PathLike) -> None:
    """Writes back and commits the whole file system `folder` is on; raises OSError as fsync does."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _LIBC.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), os.fspath(folder))
    finally:
        os.close(fd)
