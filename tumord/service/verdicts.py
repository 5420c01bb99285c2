"""Verdict files: one JSON per scan, and one line per verdict in verdicts.csv.

Names: a scan's files are named `<stem>.<sha256[:12]>` (`scan 7.3fa9c0d1e2b4.json`, archived as
`scan 7.3fa9c0d1e2b4.png`), so the name says which bytes were judged. The same bytes under the
same name dropped again get `-2`, `-3`, ... (the ledger keeps names unique); a file whose bytes
were never read (a folder, a link out of the folder, an oversized file) uses its received time.

JSON files are written atomically (atomic.write_many): a reader sees a whole file or none.
verdicts.csv is UTF-8 with a byte-order mark (so spreadsheets read accents right; pandas skips
it), one header, and text cells that a spreadsheet would run as a formula (starting = + - @, or
a tab or carriage return) prefixed with an apostrophe. It may be rotated (renamed or deleted)
while the service runs: the next line goes to a new file with a header, never into the old one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from tumord.atomic import fsync_dir, write_atomic
from tumord.judge import record
# the names, the JSON and the CSV cells are shared with `tumord batch`; imported from here by the service
from tumord.judge.record import base_name, csv_columns, csv_line, csv_row, neutralize, to_json  # noqa: F401

CSV_NAME = "verdicts.csv"
BOM = "\ufeff"


# --- verdicts.csv ---------------------------------------------------------------------------

class CsvReplaced(OSError):
    """verdicts.csv is not the file the stored offsets refer to; they must be rebased first."""


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
        self.ensure()
        self.trim_partial_line()
        return rotated

    def ensure(self) -> os.stat_result:
        """The file as it is now; a new one with the header if it was rotated away (renamed or deleted)."""
        try:
            st = os.stat(self.path)
            if st.st_size > 0:
                return st
        except FileNotFoundError:
            pass
        write_atomic(self.path, self.header)  # also over an empty file, as `logrotate create` leaves
        return os.stat(self.path)

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

    def append(self, text: str, at: int | None = None, ino: int | None = None) -> None:
        """Appends lines durably; with `at`, first cuts the file back to that byte offset. With `ino`,
        refuses (CsvReplaced) to write into any other file than that one, e.g. one just rotated."""
        with open(self.path, "rb+") as f:
            if ino is not None and os.fstat(f.fileno()).st_ino != ino:
                raise CsvReplaced(f"{self.path} was replaced while its lines were being written")
            if at is not None and at < f.seek(0, os.SEEK_END):
                f.truncate(at)  # an earlier attempt at these lines, whole or cut short
            f.seek(0, os.SEEK_END)
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())


def _stamp() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


# --- the JSON records -----------------------------------------------------------------------

CHANGED_AFTER = ("the file changed or was replaced after it was judged, so it was not archived; "
                 "its new content gets a verdict of its own, which names this one under `replaces`")


def verdict_record(scan, name: str, received_at: str, model, archived_as: str) -> dict:
    return record.classified(
        shown=scan.shown, sha256=scan.fingerprint.sha256, probabilities=scan.probabilities,
        abstention=scan.judgement.fields() if scan.judgement is not None else {}, model=model, name=name,
        received_at=received_at, classified_at=scan.classified_at, archived_as=archived_as,
        explained=scan.explanation is not None, replaces=scan.replaces)


def error_record(scan, received_at: str, moved_to: str) -> dict:
    return record.failed(shown=scan.shown, error=scan.error, sha256=scan.fingerprint.sha256,
                         size_bytes=scan.fingerprint.size, received_at=received_at, moved_to=moved_to,
                         advice=scan.advice)


def mark_changed_after(path: Path) -> None:
    """Rewrites a verdict or error file whose input was not archived because it changed meanwhile."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    record.update({"archived_as" if "verdict" in record else "moved_to": "", "changed_after": CHANGED_AFTER})
    write_atomic(path, to_json(record))
