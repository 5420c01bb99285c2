"""The batch output folder: verdicts committed by atomic create, so that each scan has one.

Layout: `OUT/<model version>/<name>.json` for verdicts, `.../failed/<name>.error.json` for scans
that could not be judged, `.../verdicts.csv` for the table. Names are the service's
(`<stem>.<sha256[:12]>`, from `tumord.judge.record.base_name`) inside a folder per model version,
so a name says which bytes were judged by which model.

A record is written to a temporary file, fsynced, then hard-linked to its name: `os.link` fails
if the name exists, so of two attempts at the same scan (a task that Dask re-ran after its
worker died, while or after the first wrote) exactly one creates the verdict and the other finds
it. A name already taken by another file's record (the same stem and bytes at another path)
moves on to `-2`, `-3`, ...; the record's `file` says whose it is. Nothing is ever replaced.
"""
from __future__ import annotations

import errno
import json
import os
import secrets
from pathlib import Path

from tumord.atomic import fsync_dir
from tumord.judge.record import to_json

TEMP_PREFIX = ".tumord-tmp."  # as the service's: a killed worker's leftovers are swept by the next run
FAILED = "failed"


def verdict_path(folder: Path, name: str) -> Path:
    return folder / f"{name}.json"


def error_path(folder: Path, name: str) -> Path:
    return folder / FAILED / f"{name}.error.json"


def create(path: Path, data: bytes) -> bool:
    """Creates `path` with `data`, durably, unless it exists; True if this call created it."""
    tmp = path.with_name(f"{TEMP_PREFIX}{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    with open(tmp, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
            raise OSError(e.errno, f"{path.parent}: this file system does not support hard links, which batch "
                                   "needs to commit each verdict exactly once; choose an output folder on one that does") \
                from None
        raise
    finally:
        os.unlink(tmp)


def read_record(path: Path) -> dict | None:
    """A committed record, or None if there is none (records are complete once they have a name)."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None


def _existing(folder: Path, name: str) -> dict | None:
    return read_record(verdict_path(folder, name)) or read_record(error_path(folder, name))


def _names(base: str):
    yield base
    n = 2
    while True:
        yield f"{base}-{n}"
        n += 1


def find(folder: Path, base: str, shown: str) -> tuple[str, dict] | None:
    """The name and record committed for the scan `shown` under `base`, `base-2`, ..., if any."""
    for name in _names(base):
        record = _existing(folder, name)
        if record is None:
            return None
        if record["file"] == shown:
            return name, record


def commit(folder: Path, base: str, shown: str, make, error: bool) -> tuple[bool, str, dict]:
    """Commits `make(name)`, the scan's verdict (or with `error`, its error record) under a name,
    under the first of `base`, `base-2`, ... that holds no other file's record. Returns (created,
    its name, the committed record); created is False when another attempt at the scan committed it first.
    (The same bytes always end the same way, verdict or error, so two attempts never race for a
    name in different folders.)"""
    for name in _names(base):
        record = _existing(folder, name)
        if record is None:
            record = make(name)
            target = error_path(folder, name) if error else verdict_path(folder, name)
            if create(target, to_json(record)):
                return True, name, record
            record = read_record(target)
        if record["file"] == shown:
            return False, name, record


def sweep(folder: Path) -> list[Path]:
    """Removes temporary files that killed workers left; call only while no task of this output runs."""
    swept = []
    for sub in (folder, folder / FAILED):
        for p in sub.glob(f"{TEMP_PREFIX}*"):
            p.unlink(missing_ok=True)
            swept.append(p)
    return swept


def prepare(folder: Path) -> None:
    (folder / FAILED).mkdir(parents=True, exist_ok=True)


def sync(folder: Path) -> None:
    """The new names themselves survive a power cut once their folders are synced."""
    fsync_dir(folder)
    fsync_dir(folder / FAILED)
