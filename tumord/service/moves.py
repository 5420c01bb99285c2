"""Taking a judged file out of the input folder: is it still what was judged, and how to move it.

Identity rests on what was judged (the inode and the bytes' SHA-256), not on metadata: a client
that sets the mtime after copying (`touch -d`, `cp -p`, `rsync -t`, a time-fixing sync tool)
has not made a new scan. Only when size or mtime differ are the bytes read again to tell.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
from pathlib import Path

from tumord.atomic import TEMP_PREFIX, fsync_dir
from tumord.service.ledger import Fingerprint

SAME, CHANGED, OTHER = "same", "changed", "other"


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def identity(fp: Fingerprint, path: Path, st: os.stat_result, any_inode: bool = False) -> str:
    """SAME file and bytes as judged; CHANGED: the same file (inode) with other bytes; OTHER file.

    With any_inode, a new file with the very bytes judged (a client that rewrites by temporary
    file and rename, as rsync does) is the SAME too.
    """
    if fp.matches(st):
        return SAME
    other = st.st_ino != fp.ino
    if (other and not any_inode) or fp.sha256 is None or not stat.S_ISREG(st.st_mode) or st.st_size != fp.size:
        return OTHER if other else CHANGED
    if sha256_of(path) == fp.sha256:
        return SAME
    return OTHER if other else CHANGED


def move(src: str | Path, dst: str | Path, st: os.stat_result | None = None) -> None:
    """Moves a file by hard link then unlink, a folder by rename, across file systems by copy.

    Not a rename for files: a rename out of a watched folder is an IN_MOVED_FROM event, which
    watchdog holds for half a second to pair it with an IN_MOVED_TO, and every later event of the
    folder waits behind it. An unlink is reported at once. A crash between link and unlink
    leaves both names; the retry finds the link in place and only unlinks. A file with other
    links (a hard-linked drop: the user's own file elsewhere) is copied, so the archive never
    shares its inode with a file that someone else may change. `st`: src's lstat, if just taken.
    """
    st = st or os.lstat(src)
    if stat.S_ISDIR(st.st_mode):
        _rename_or_copy(Path(src), Path(dst))
        return
    try:
        if os.path.samestat(st, os.lstat(dst)):
            os.unlink(src)  # linked before a crash: only the unlink is left
            return
    except FileNotFoundError:
        pass
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        _copy(Path(src), Path(dst))
        os.unlink(src)
        return
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        _rename_or_copy(Path(src), Path(dst))
        return
    os.unlink(src)


def _rename_or_copy(src: Path, dst: Path) -> None:
    try:
        os.rename(src, dst)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        _copy(src, dst)  # another file system
        shutil.rmtree(src) if src.is_dir() and not src.is_symlink() else os.unlink(src)


def _copy(src: Path, dst: Path) -> None:
    """Copies to a temporary name beside dst, syncs, renames: dst is whole or absent."""
    tmp = dst.with_name(f"{TEMP_PREFIX}{dst.name}.tmp")
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, tmp, symlinks=True)
    else:
        shutil.copy2(src, tmp, follow_symlinks=False)
        if not tmp.is_symlink():
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
    os.rename(tmp, dst)
    fsync_dir(dst.parent)
