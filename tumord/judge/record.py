"""A scan's verdict and error records, their file names, and their cells in a table.

`classified` and `failed` make the JSON records that `watch` writes to output/ and failed/ and
that `batch` writes to its output folder: the same fields, so the two commands' records of the
same bytes and model differ only in their timestamps (and in where the input went, which only
the service moves).

Names: `<stem>.<sha256[:12]>` (see `base_name`), so the name says which bytes were judged.
Cells: text that a spreadsheet would run as a formula (starting = + - @, or a tab or carriage
return) is prefixed with an apostrophe, and no cell holds a line break.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
from datetime import datetime, timezone

import numpy as np

from tumord import __version__


# Unicode's control characters (category Cc): U+0000-U+001F and U+007F-U+009F
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_TAB = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def utc_now() -> str:
    """UTC ISO 8601 with milliseconds, as every verdict and error file states times."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def printable(path: str) -> str:
    """A path as valid text: bytes that are not UTF-8 (a Latin-1 name from a file share) become U+FFFD."""
    return os.fsencode(path).decode("utf-8", "replace")


def base_name(rel_path: str, sha256: str | None, received_at: str) -> str:
    """`<stem>.<sha256[:12]>`, safe as a file name; a file whose bytes were never read (a folder,
    a link out of the folder, an oversized file) uses its received time instead of the hash."""
    stem = os.path.splitext(os.path.basename(printable(rel_path)))[0] or "scan"
    stem = _CONTROL.sub("_", stem)
    while len(stem.encode()) > 150:  # room for the suffixes within the 255-byte name limit
        stem = stem[:-1]
    tag = sha256[:12] if sha256 else received_at.replace("-", "").replace(":", "").replace(".", "")
    return f"{stem}.{tag}"


def to_json(record: dict) -> bytes:
    """One line: json's C encoder writes it (indented, the pure-Python one, at 2-3 times the CPU)."""
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


def classified(*, shown: str, sha256: str, probabilities: np.ndarray, abstention: dict, model, name: str,
               received_at: str, classified_at: str, archived_as: str, explained: bool = False,
               replaces: str | None = None) -> dict:
    """The verdict of a decoded and predicted scan; `model` is the Classifier that predicted it,
    `abstention` the Judgement's fields (abstain.judge), `replaces` the name of the verdict of the
    same file's earlier bytes (the service)."""
    return {
        "file": shown,
        "sha256": sha256,
        "label": model.class_names[int(probabilities.argmax())],
        "probabilities": {c: round(float(p), 6) for c, p in zip(model.class_names, probabilities)},
        "confidence": round(float(probabilities.max()), 6),
        **abstention,
        "model": model.identity,
        "received_at": received_at,
        "classified_at": classified_at,
        "tumord_version": __version__,
        "verdict": f"{name}.json",
        **({"explanation": f"{name}.png"} if explained else {}),
        **({"replaces": f"{replaces}.json"} if replaces else {}),
        "archived_as": archived_as,
    }


def failed(*, shown: str, error: str, sha256: str | None, size_bytes: int, received_at: str, moved_to: str,
           advice: str | None = None) -> dict:
    """The error record of a scan that could not be judged: why, and what to do if anything."""
    return {
        "file": shown,
        "error": error,
        **({"what_to_do": advice} if advice else {}),
        "sha256": sha256,
        "size_bytes": size_bytes,
        "received_at": received_at,
        "failed_at": utc_now(),
        "moved_to": moved_to,
        "tumord_version": __version__,
    }


# --- table cells ----------------------------------------------------------------------------

def csv_columns(class_names: list[str]) -> list[str]:
    return (["file", "sha256", "label", "confidence"] + [f"probability_{c}" for c in class_names]
            + ["model_version", "model_sha256", "received_at", "classified_at", "tumord_version", "verdict"]
            + ["abstained", "abstain_reasons", "feature_distance"])


def abstention_cells(verdict: dict) -> list:
    distance = verdict.get("feature_distance")
    return ["yes" if verdict.get("abstained") else "no", "; ".join(verdict.get("abstain_reasons", [])),
            "" if distance is None else distance["value"]]


def csv_cells(verdict: dict, class_names: list[str]) -> list:
    """A verdict's cells in the order of `csv_columns`."""
    return [verdict["file"], verdict["sha256"], verdict["label"], verdict["confidence"],
            *[verdict["probabilities"][c] for c in class_names],
            verdict["model"]["version"], verdict["model"]["sha256"], verdict["received_at"],
            verdict["classified_at"], verdict["tumord_version"], verdict["verdict"], *abstention_cells(verdict)]


def neutralize(value) -> str:
    """A cell as text that no spreadsheet evaluates, on one line."""
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        text = "'" + text
    # no line breaks inside a row: a line is then always a whole row, which crash repair relies on
    return _CONTROL_BUT_TAB.sub("\ufffd", text)


def csv_row(cells: list) -> str:
    """One CSV line (CRLF-terminated) of neutralized cells."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow([neutralize(c) for c in cells])
    return buf.getvalue()


def csv_line(verdict: dict, class_names: list[str]) -> str:
    return csv_row(csv_cells(verdict, class_names))
