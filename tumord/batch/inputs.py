"""What a batch run judges: every file under a folder, or the paths a manifest lists.

A folder is walked recursively (links to folders are not followed); hidden files and folders
(names starting with '.') and the run's output folder are left out, everything else is a scan, so a stray file fails with
its reason instead of vanishing from the count. A manifest is a text file with one path per line
(blank lines and lines starting with '#' skipped) or a CSV whose header has a `path` column.
Relative paths in a manifest are relative to the manifest's folder. Each scan is reported by
the path relative to the folder, or as written in the manifest; a path listed twice is judged once.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from tumord.judge.record import printable


@dataclass(frozen=True)
class Inputs:
    items: list[tuple[str, str]]  # (path to read, path as reported)
    root: str | None  # links must stay inside this folder; None for a manifest (its paths are the operator's)


def collect(source: Path, output: Path | None = None) -> Inputs:
    """The scans of `source`; a walked folder leaves out `output` (the run's own records) if it is inside."""
    if source.is_dir():
        return Inputs(_walk(source, output), str(source.absolute()))
    if source.is_file():
        return Inputs(_manifest(source), None)
    raise ValueError(f"--data {source}: no such folder or manifest file")


def _walk(folder: Path, output: Path | None) -> list[tuple[str, str]]:
    root = str(folder.absolute())
    skip = os.path.realpath(output) if output is not None else None
    items = []
    for here, dirs, files in os.walk(root, onerror=_raise):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and os.path.realpath(os.path.join(here, d)) != skip)
        for name in sorted(files):
            if not name.startswith("."):
                path = os.path.join(here, name)
                items.append((path, printable(os.path.relpath(path, root))))
    return items


def _raise(error: OSError) -> None:
    raise error


def _manifest(path: Path) -> list[tuple[str, str]]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"--data {path}: the manifest is not UTF-8 text ({e.reason} at byte {e.start})") from None
    header = next(iter(csv.reader(lines[:1])), [])
    if "path" in (h.strip() for h in header):
        column = [h.strip() for h in header].index("path")
        listed = [row[column] for row in csv.reader(lines[1:]) if len(row) > column and row[column].strip()]
    else:
        listed = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not listed:
        raise ValueError(f"--data {path}: the manifest lists no paths (one per line, or a CSV with a 'path' column)")
    base = path.absolute().parent
    seen, items = set(), []
    for entry in (e.strip() for e in listed):
        full = os.path.normpath(os.path.join(base, entry))
        if full not in seen:
            seen.add(full)
            items.append((full, entry))
    return items
