"""The ledger: one durable row per scan, the service's memory across crashes (SQLite, fsynced).

A row moves through three states, each committed before the step that depends on it:

    received  its unique name is reserved; the verdict file may exist (written under that name)
    written   the verdict (or error) file is durable; the CSV line and its byte offset are stored
    done      the CSV line is appended and the input has left the input folder

Only one commit thread writes, and it finishes a batch before starting the next, so rows in
`written` are always one batch: restart truncates verdicts.csv to their first offset and
appends their stored lines again (see commit.py for the crash points).

A scan is identified by its fingerprint: path in the input folder, size, mtime, inode and
SHA-256. The same name dropped again later is a new file (a new inode or mtime, usually new
bytes), so it gets a new row and its own verdict.
"""
from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS scans (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,  -- verdict <name>.json, archive <name><suffix>
    path        BLOB NOT NULL,         -- relative to the input folder, as file system bytes
    sha256      TEXT,                  -- NULL when the bytes were not read (a folder, a link out, too big)
    size        INTEGER NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    ino         INTEGER NOT NULL,
    received_at TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('received', 'written', 'done')),
    outcome     TEXT CHECK (outcome IN ('classified', 'failed')),
    label       TEXT,
    error       TEXT,
    model       TEXT,                  -- version of the model that classified it
    csv_at      INTEGER,               -- byte offset of its line in verdicts.csv
    csv_line    TEXT,                  -- kept only until done
    moved_to    TEXT,                  -- where the input went ('' when deleted)
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS scans_fingerprint ON scans (path, size, mtime_ns, ino);
CREATE INDEX IF NOT EXISTS scans_state ON scans (state) WHERE state != 'done';
"""


@dataclass(frozen=True)
class Fingerprint:
    path: str  # relative to the input folder
    size: int
    mtime_ns: int
    ino: int
    sha256: str | None

    @classmethod
    def of(cls, rel: str, st: os.stat_result, sha256: str | None) -> "Fingerprint":
        return cls(rel, st.st_size, st.st_mtime_ns, st.st_ino, sha256)

    def matches(self, st: os.stat_result) -> bool:
        return (st.st_size, st.st_mtime_ns, st.st_ino) == (self.size, self.mtime_ns, self.ino)


@dataclass
class Row:
    id: int
    name: str
    fingerprint: Fingerprint
    received_at: str
    state: str
    outcome: str | None = None
    csv_at: int | None = None
    csv_line: str | None = None
    moved_to: str | None = None


_COLUMNS = "id, name, path, size, mtime_ns, ino, sha256, received_at, state, outcome, csv_at, csv_line, moved_to"


def _row(r) -> Row:
    return Row(r[0], r[1], Fingerprint(os.fsdecode(r[2]), r[3], r[4], r[5], r[6]), r[7], r[8], r[9], r[10], r[11],
               r[12])


class Ledger:
    def __init__(self, path: str | os.PathLike):
        # one connection shared by the classify thread (reads) and the commit thread (writes)
        self._db = sqlite3.connect(os.fspath(path), isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _query(self, sql: str, args=()) -> list:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _transaction(self, sql: str, rows) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(sql, rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # --- reads -------------------------------------------------------------------------------
    def find(self, fp: Fingerprint) -> Row | None:
        """The latest row for this exact file, if it was seen before."""
        rows = self._query(f"SELECT {_COLUMNS} FROM scans WHERE path=? AND size=? AND mtime_ns=? AND ino=? "
                           "AND sha256 IS ? ORDER BY id DESC LIMIT 1",
                           (os.fsencode(fp.path), fp.size, fp.mtime_ns, fp.ino, fp.sha256))
        return _row(rows[0]) if rows else None

    def in_state(self, state: str) -> list[Row]:
        return [_row(r) for r in self._query(f"SELECT {_COLUMNS} FROM scans WHERE state=? ORDER BY id", (state,))]

    def name_taken(self, name: str) -> bool:
        return bool(self._query("SELECT 1 FROM scans WHERE name=?", (name,)))

    def counts(self) -> dict[str, int]:
        rows = self._query("SELECT coalesce(outcome, state), count(*) FROM scans GROUP BY 1")
        return {k: n for k, n in rows}

    # --- the three commits ---------------------------------------------------------------
    def receive(self, items: list[tuple[str, Fingerprint, str]]) -> list[Row]:
        """Reserves rows for (name, fingerprint, received_at); names must be free."""
        if not items:
            return []
        self._transaction(
            "INSERT INTO scans (name, path, size, mtime_ns, ino, sha256, received_at, state) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 'received')",
            [(n, os.fsencode(f.path), f.size, f.mtime_ns, f.ino, f.sha256, at) for n, f, at in items])
        names = [n for n, _, _ in items]
        marks = ",".join("?" * len(names))
        rows = {r[1]: _row(r) for r in self._query(f"SELECT {_COLUMNS} FROM scans WHERE name IN ({marks})", names)}
        return [rows[n] for n in names]

    def written(self, updates: list[dict]) -> None:
        """Verdict files are durable: outcome, label/error, model, csv_at and csv_line per row id."""
        self._transaction(
            "UPDATE scans SET state='written', outcome=:outcome, label=:label, error=:error, model=:model, "
            "csv_at=:csv_at, csv_line=:csv_line, moved_to=:moved_to WHERE id=:id",
            updates)

    def done(self, ids: list[int], finished_at: str) -> None:
        self._transaction("UPDATE scans SET state='done', csv_line=NULL, finished_at=? WHERE id=?",
                          [(finished_at, i) for i in ids])

    def drop(self, ids: list[int]) -> None:
        """Forgets rows whose file vanished or changed before its verdict was durable."""
        self._transaction("DELETE FROM scans WHERE id=? AND state='received'", [(i,) for i in ids])
