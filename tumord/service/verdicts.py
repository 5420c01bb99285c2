"""Verdict files: one JSON per scan, and one line per verdict in verdicts.csv.

Names: a scan's files are named `<stem>.<sha256[:12]>` (`scan 7.3fa9c0d1e2b4.json`, archived as
`scan 7.3fa9c0d1e2b4.png`; see `tumord.judge.record.base_name`), so the name says which bytes were
judged. The same bytes under the same name dropped again get `-2`, `-3`, ... (the ledger keeps
names unique). The records and their CSV cells are made in `tumord.judge.record`, shared with batch.

JSON files are written to a temporary name, fsynced, renamed, and their folder fsynced: a
reader sees a whole file or none. verdicts.csv is UTF-8 with a byte-order mark (so spreadsheets
read accents right; pandas skips it), one header, and cells neutralized against spreadsheet formulas.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tumord.atomic import fsync_dir
from tumord.judge.record import csv_columns, csv_row

TEMP_PREFIX = ".tumord-tmp."  # our temporary files; anything left with it after a crash is swept
CSV_NAME = "verdicts.csv"
BOM = "\ufeff"


def write_files(items: list[tuple[Path, bytes]], pool: ThreadPoolExecutor | None = None) -> None:
    """Writes several files atomically and durably; the fsyncs run in parallel (the journal groups them)."""
    def write_temp(item):
        path, data = item
        tmp = path.with_name(f"{TEMP_PREFIX}{path.name}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    temps = list(pool.map(write_temp, items) if pool is not None else map(write_temp, items))
    for tmp, (path, _) in zip(temps, items):
        os.replace(tmp, path)
    for folder in {path.parent for path, _ in items}:
        fsync_dir(folder)


def sweep_temporaries(*folders: Path) -> list[Path]:
    """Removes temporary files a killed process left behind; returns them."""
    swept = []
    for folder in folders:
        for p in folder.glob(f"{TEMP_PREFIX}*"):
            p.unlink(missing_ok=True)
            swept.append(p)
    return swept


class VerdictCsv:
    """verdicts.csv, appended with fsync; the header is written once, with the file."""

    def __init__(self, path: Path, class_names: list[str]):
        self.path, self.class_names = Path(path), list(class_names)
        self.header = BOM + csv_row(csv_columns(self.class_names))

    def open(self) -> Path | None:
        """Creates the file, or checks the existing one; returns where an old file with other
        columns (another class set) was moved to, None otherwise."""
        rotated = None
        if self.path.exists():
            with open(self.path, "r", encoding="utf-8", newline="") as f:
                first = f.readline()
            if first != self.header:
                rotated = self.path.with_name(f"verdicts.until-{_stamp()}.csv")
                os.replace(self.path, rotated)
                fsync_dir(self.path.parent)
        if not self.path.exists():
            write_files([(self.path, self.header.encode("utf-8"))])
        self.trim_partial_line()
        return rotated

    def size(self) -> int:
        return self.path.stat().st_size

    def trim_partial_line(self) -> None:
        """A line cut short by a crash (no line end) is removed; whole lines never contain one."""
        with open(self.path, "rb+") as f:
            data_end = f.seek(0, os.SEEK_END)
            tail_at = max(0, data_end - 65536)
            f.seek(tail_at)
            tail = f.read()
            if tail.endswith(b"\n"):
                return
            keep = tail_at + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
            f.truncate(max(keep, len(self.header.encode())))
            os.fsync(f.fileno())

    def append(self, text: str, at: int | None = None) -> None:
        """Appends lines durably; with `at`, first cuts the file back to that byte offset."""
        with open(self.path, "rb+") as f:
            if at is not None and at < f.seek(0, os.SEEK_END):
                f.truncate(at)  # an earlier attempt at these lines, whole or cut short
            f.seek(0, os.SEEK_END)
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())


def _stamp() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
