"""Finding verdicts in the output folder: by file name, by the scan's SHA-256, or by a file."""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

HEX = re.compile(r"[0-9a-fA-F]{12,64}")


class NotFound(ValueError):
    """A verdict or scan that cannot be found; the message says what was looked for and where."""


def read_verdict(path: Path) -> dict | None:
    """A classified verdict's record, None for anything else (error records, other JSON)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    ok = isinstance(record, dict) and {"verdict", "sha256", "probabilities", "label"} <= set(record)
    return record if ok else None


def all_verdicts(output: Path) -> Iterator[tuple[Path, dict]]:
    for p in sorted(Path(output).glob("*.json")):
        record = read_verdict(p)
        if record is not None:
            yield p, record


def _by_sha(output: Path, sha: str) -> list[tuple[Path, dict]]:
    """Verdict names carry the first 12 hex digits of the scan's SHA-256 (`<stem>.<sha[:12]>[-n].json`)."""
    sha = sha.lower()
    found = []
    for p in sorted(Path(output).glob(f"*.{sha[:12]}*.json")):
        record = read_verdict(p)
        if record is not None and str(record["sha256"]).startswith(sha):
            found.append((p, record))
    return found


def find(output: Path, key: str) -> tuple[Path, dict, Path | None]:
    """(verdict file, its record, the scan file given as key or None) for a verdict name, a SHA-256
    (or its first 12+ hex digits), a verdict JSON file, or a scan file the service judged."""
    output = Path(output)
    given = Path(key)
    if given.is_file():
        record = read_verdict(given) if given.suffix.lower() == ".json" else None
        if record is not None:
            return given, record, None
        sha = hashlib.sha256(given.read_bytes()).hexdigest()
        matches = _by_sha(output, sha)
        if not matches:
            raise NotFound(f"{given}: no verdict in {output} for a scan with these bytes (SHA-256 {sha[:12]}...)")
        return *matches[-1], given
    for name in (key, f"{key}.json"):
        candidate = output / name
        if "/" not in key and candidate.is_file() and (record := read_verdict(candidate)) is not None:
            return candidate, record, None
    if HEX.fullmatch(key):
        matches = _by_sha(output, key)
        shas = {r["sha256"] for _, r in matches}
        if len(shas) > 1:
            raise NotFound(f"{key}: matches scans with {len(shas)} different SHA-256s; give more digits")
        if matches:
            return *matches[-1], None
    raise NotFound(f"{key}: no such verdict in {output} (expected a verdict name like 'scan 7.3fa9c0d1e2b4.json', "
                   "a scan's SHA-256, or a verdict or scan file)")
