"""The series store: which classified DICOM slices belong to which series, durable across crashes.

One SQLite file (`output/series.sqlite3`, created with the first DICOM instance). An instance row
is written right after its verdict file is durable and before the ledger calls it written, so a
crash in between re-classifies the file and writes the same row again (keyed by series and SOP
Instance UID). A series row holds when its last instance arrived (wall-clock seconds, so the
quiet window survives a restart) and whether its series verdict is written. No patient data:
UIDs, numbers, the series description, verdict names and probabilities only.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    series TEXT NOT NULL, sop TEXT NOT NULL, study TEXT NOT NULL, number INTEGER, modality TEXT,
    description TEXT, verdict TEXT NOT NULL, archived TEXT, explanation TEXT, model TEXT NOT NULL,
    classes TEXT NOT NULL, slices TEXT NOT NULL, PRIMARY KEY (series, sop));
CREATE TABLE IF NOT EXISTS series (
    series TEXT PRIMARY KEY, last_arrival REAL NOT NULL, done INTEGER NOT NULL DEFAULT 0,
    revision INTEGER NOT NULL DEFAULT 0);
"""


@dataclass
class Instance:
    series: str
    sop: str
    study: str
    number: int | None
    modality: str
    description: str
    verdict: str  # the instance's verdict file name in output/
    archived: str  # where the source file was archived ("" when deleted)
    explanation: str  # its heat-map PNG in output/, "" without
    model: dict
    classes: list[str]
    slices: list[list[float]]  # per frame, per class

    def row(self) -> tuple:
        return (self.series, self.sop, self.study, self.number, self.modality, self.description, self.verdict,
                self.archived, self.explanation, json.dumps(self.model), json.dumps(self.classes),
                json.dumps(self.slices))

    @classmethod
    def from_row(cls, r) -> "Instance":
        return cls(*r[:9], json.loads(r[9]), json.loads(r[10]), json.loads(r[11]))


class SeriesStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        if self.path.exists():
            self._open()

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = sqlite3.connect(os.fspath(self.path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        return self._db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def add(self, instances: list[Instance], now: float) -> None:
        """Records instances and reopens their series (a late instance makes a new revision)."""
        with self._lock:
            db = self._open()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR REPLACE INTO instances VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                               [i.row() for i in instances])
                db.executemany("INSERT INTO series (series, last_arrival) VALUES (?, ?) ON CONFLICT(series) "
                               "DO UPDATE SET last_arrival = excluded.last_arrival, done = 0",
                               [(s, now) for s in {i.series for i in instances}])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def restart_windows(self, now: float) -> int:
        """Open series wait a whole window again: after a restart, their next instances may still
        be waiting in the input folder's backlog. Returns how many are open."""
        with self._lock:
            if self._db is None:
                return 0
            return self._db.execute("UPDATE series SET last_arrival = ? WHERE done = 0", (now,)).rowcount

    def due(self, now: float, quiet: float) -> list[str]:
        """Open series whose last instance arrived at least `quiet` seconds ago."""
        with self._lock:
            if self._db is None:
                return []
            return [r[0] for r in self._db.execute(
                "SELECT series FROM series WHERE done = 0 AND last_arrival <= ? ORDER BY last_arrival",
                (now - quiet,))]

    def open_count(self) -> int:
        with self._lock:
            if self._db is None:
                return 0
            return self._db.execute("SELECT COUNT(*) FROM series WHERE done = 0").fetchone()[0]

    def instances(self, series: str) -> list[Instance]:
        with self._lock:
            rows = self._open().execute("SELECT * FROM instances WHERE series = ? ORDER BY number, sop", (series,))
            return [Instance.from_row(r) for r in rows]

    def revision(self, series: str) -> int:
        with self._lock:
            row = self._open().execute("SELECT revision FROM series WHERE series = ?", (series,)).fetchone()
            return row[0] if row else 0

    def mark_done(self, series: str, arrival_seen: float | None = None) -> None:
        """Done, unless an instance arrived after the verdict was begun (then it stays open)."""
        with self._lock:
            self._open().execute("UPDATE series SET done = 1, revision = revision + 1 WHERE series = ? "
                                 "AND last_arrival <= ?", (series, arrival_seen if arrival_seen is not None
                                                           else float("inf")))

    def last_arrival(self, series: str) -> float:
        with self._lock:
            row = self._open().execute("SELECT last_arrival FROM series WHERE series = ?", (series,)).fetchone()
            return row[0] if row else 0.0
