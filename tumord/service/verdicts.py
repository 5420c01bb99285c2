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

import csv
import io
import json
import os
import unicodedata
from pathlib import Path

from tumord import __version__
from tumord.atomic import fsync_dir, write_atomic
from tumord.service.records import printable, utc_now

CSV_NAME = "verdicts.csv"
BOM = "\ufeff"


def base_name(rel_path: str, sha256: str | None, received_at: str) -> str:
    """`<stem>.<sha256[:12]>`, safe as a file name; see the module docstring."""
    stem = os.path.splitext(os.path.basename(printable(rel_path)))[0] or "scan"
    stem = "".join("_" if unicodedata.category(c) == "Cc" else c for c in stem)
    while len(stem.encode()) > 150:  # room for the suffixes within the 255-byte name limit
        stem = stem[:-1]
    tag = sha256[:12] if sha256 else received_at.replace("-", "").replace(":", "").replace(".", "")
    return f"{stem}.{tag}"


def to_json(record: dict) -> bytes:
    return (json.dumps(record, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


# --- verdicts.csv ---------------------------------------------------------------------------

def csv_columns(class_names: list[str]) -> list[str]:
    return (["file", "sha256", "label", "confidence"] + [f"probability_{c}" for c in class_names]
            + ["model_version", "model_sha256", "received_at", "classified_at", "tumord_version", "verdict"]
            + ["abstained", "abstain_reasons", "feature_distance"])


def neutralize(value) -> str:
    """A cell as text that no spreadsheet evaluates, on one line."""
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        text = "'" + text
    # no line breaks inside a row: a line is then always a whole row, which crash repair relies on
    return "".join("\ufffd" if unicodedata.category(c) == "Cc" and c != "\t" else c for c in text)


def _line(cells: list) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow([neutralize(c) for c in cells])
    return buf.getvalue()


def csv_line(verdict: dict, class_names: list[str]) -> str:
    return _line([verdict["file"], verdict["sha256"], verdict["label"], verdict["confidence"],
                  *[verdict["probabilities"][c] for c in class_names],
                  verdict["model"]["version"], verdict["model"]["sha256"], verdict["received_at"],
                  verdict["classified_at"], verdict["tumord_version"], verdict["verdict"],
                  *abstention_cells(verdict)])


def abstention_cells(verdict: dict) -> list:
    distance = verdict.get("feature_distance")
    return ["yes" if verdict.get("abstained") else "no", "; ".join(verdict.get("abstain_reasons", [])),
            "" if distance is None else distance["value"]]


class CsvReplaced(OSError):
    """verdicts.csv is not the file the stored offsets refer to; they must be rebased first."""


class VerdictCsv:
    """verdicts.csv, appended with fsync; the header is written once, with the file."""

    def __init__(self, path: Path, class_names: list[str]):
        self.path, self.class_names = Path(path), list(class_names)
        self.header = BOM + _line(csv_columns(self.class_names))

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
    probs = scan.probabilities
    return {
        "file": scan.shown,
        "sha256": scan.fingerprint.sha256,
        "label": model.class_names[int(probs.argmax())],
        "probabilities": {c: round(float(p), 6) for c, p in zip(model.class_names, probs)},
        "confidence": round(float(probs.max()), 6),
        **(scan.judgement.fields() if scan.judgement is not None else {}),
        "model": model.identity,
        "received_at": received_at,
        "classified_at": scan.classified_at,
        "tumord_version": __version__,
        "verdict": f"{name}.json",
        **({"explanation": f"{name}.png"} if scan.explanation is not None else {}),
        **({"replaces": f"{scan.replaces}.json"} if scan.replaces else {}),
        "archived_as": archived_as,
    }


def error_record(scan, received_at: str, moved_to: str) -> dict:
    return {
        "file": scan.shown,
        "error": scan.error,
        **({"what_to_do": scan.advice} if scan.advice else {}),
        "sha256": scan.fingerprint.sha256,
        "size_bytes": scan.fingerprint.size,
        "received_at": received_at,
        "failed_at": utc_now(),
        "moved_to": moved_to,
        "tumord_version": __version__,
    }


def mark_changed_after(path: Path) -> None:
    """Rewrites a verdict or error file whose input was not archived because it changed meanwhile."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    record.update({"archived_as" if "verdict" in record else "moved_to": "", "changed_after": CHANGED_AFTER})
    write_atomic(path, to_json(record))
