"""The ledger: one durable row per scan, the service's memory across crashes (SQLite, fsynced).

A row moves through three states, each committed before the step that depends on it:

    received  its unique name is reserved; the verdict file may exist (written under that name)
    written   the verdict (or error) file is durable; the CSV line and its byte offset are stored
    done      the CSV line is appended and the input has left the input folder

Only one commit thread writes, and it finishes a group of batches before the next, so rows in
`written` are always one group: restart truncates verdicts.csv to their first offset and
appends their stored lines again (see commit.py for the crash points).

A scan is identified by what was judged: its path in the input folder, its inode and the SHA-256
of its bytes (size and mtime too for files whose bytes were never read). Not by metadata a
client may change afterwards: `touch`, `cp -p` or `rsync -t` setting the mtime of a file already
judged does not make it a new scan. The same name dropped again later is a new file (a new
inode, usually new bytes), so it gets a new row and its own verdict; a file whose bytes changed
after it was judged is judged again (`stayed` marks the first row, whose input never moved).
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
    finished_at TEXT,
    csv_ino     INTEGER,               -- inode of the verdicts.csv that csv_at refers to
    stayed      INTEGER                -- 1: its bytes changed after judging, so it was not moved
);
CREATE INDEX IF NOT EXISTS scans_fingerprint ON scans (path, size, mtime_ns, ino);
CREATE INDEX IF NOT EXISTS scans_identity ON scans (path, ino);
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
        """The same file with the same metadata (see moves.same_file for the same bytes)."""
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
    csv_ino: int | None = None
    label: str | None = None
    error: str | None = None
    model: str | None = None


_COLUMNS = ("id, name, path, size, mtime_ns, ino, sha256, received_at, state, outcome, csv_at, csv_line, moved_to, "
            "csv_ino, label, error, model")
_S_COLUMNS = ", ".join(f"s.{c}" for c in _COLUMNS.split(", "))  # the same, of the table named s
_ADDED = {"csv_ino": "INTEGER", "stayed": "INTEGER"}  # columns newer than the first ledgers


def _key(fp: Fingerprint) -> tuple:
    """What `find` matches on: the bytes' hash, or size and mtime for a file whose bytes were not read."""
    return (fp.path, fp.ino, fp.sha256) if fp.sha256 is not None else (fp.path, fp.ino, None, fp.size, fp.mtime_ns)


def _row(r) -> Row:
    return Row(r[0], r[1], Fingerprint(os.fsdecode(r[2]), r[3], r[4], r[5], r[6]), r[7], r[8], *r[9:])


class Ledger:
    def __init__(self, path: str | os.PathLike):
        # one connection shared by the classify thread (reads) and the commit thread (writes)
        self._db = sqlite3.connect(os.fspath(path), isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns
            have = {r[1] for r in self._db.execute("PRAGMA table_info(scans)")}
            for column, kind in _ADDED.items():
                if have and column not in have:
                    self._db.execute(f"ALTER TABLE scans ADD COLUMN {column} {kind}")
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
                # SQLite has already rolled back after some errors (a full disk): a second rollback
                # would raise "no transaction is active" and hide the real reason
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    # --- reads -------------------------------------------------------------------------------
    def find(self, fp: Fingerprint) -> Row | None:
        """The latest row for this file with these bytes, if it was judged before (see the docstring)."""
        return self.find_many([fp])[0]

    def find_many(self, fps: list[Fingerprint]) -> list[Row | None]:
        """`find` for each of a batch's fingerprints, in one query per 400 of them: the rows of the
        same path and inode, of which the latest with the same bytes (a file whose bytes were not read:
        the same size and mtime) is the one; one whose input stayed after its bytes changed is not."""
        pairs = sorted({(os.fsencode(fp.path), fp.ino) for fp in fps})
        latest = {}
        for i in range(0, len(pairs), 400):  # two bound parameters each, within SQLite's limit
            chunk = pairs[i:i + 400]
            # a join, not `(path, ino) IN (VALUES ...)`: SQLite searches the index for a join only
            rows = self._query(f"WITH w(path, ino) AS (VALUES {','.join(['(?, ?)'] * len(chunk))}) "
                               f"SELECT {_S_COLUMNS}, s.stayed FROM w JOIN scans s ON s.path = w.path "
                               "AND s.ino = w.ino ORDER BY s.id", [v for pair in chunk for v in pair])
            for r in rows:  # in id order: the last row kept for a key is the latest, as `find` returns
                row = _row(r[:-1])
                if row.fingerprint.sha256 is None or r[-1] != 1:  # its bytes changed after judging: not them
                    latest[_key(row.fingerprint)] = row
        return [latest.get(_key(fp)) for fp in fps]

    def _query_in(self, sql: str, values: list) -> list:
        """Rows of `sql`, whose one `{}` becomes a list of placeholders, over every value, in chunks
        within SQLite's limit on bound parameters."""
        rows = []
        for i in range(0, len(values), 500):
            chunk = values[i:i + 500]
            rows += self._query(sql.format(",".join("?" * len(chunk))), chunk)
        return rows

    def stayed_many(self, paths: list[str]) -> dict[str, str]:
        """path -> the name of its latest verdict, for those paths whose input stayed because it
        changed after judging."""
        rows = self._query_in("SELECT path, name, stayed FROM scans WHERE id IN "
                              "(SELECT max(id) FROM scans WHERE path IN ({}) GROUP BY path)",
                              [os.fsencode(p) for p in paths])
        return {os.fsdecode(path): name for path, name, stayed in rows if stayed == 1}

    def names_taken(self, names: list[str]) -> set[str]:
        """Which of `names` the ledger holds."""
        return {r[0] for r in self._query_in("SELECT name FROM scans WHERE name IN ({})", names)}

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

    def written(self, verdicts: list) -> None:
        """Verdict files are durable: outcome, label/error, model, CSV line and where it goes, per row."""
        self._transaction(
            "UPDATE scans SET state='written', outcome=?, label=?, error=?, model=?, csv_at=?, csv_ino=?, "
            "csv_line=?, moved_to=? WHERE id=?",
            [(v.outcome, v.label, v.error, v.model, v.csv_at, v.csv_ino, v.csv_line, v.moved_to, v.id)
             for v in verdicts])

    def rebase(self, offsets: list[tuple[int, int, int]]) -> None:
        """(csv_at, csv_ino, id): the CSV lines of written rows go to another file (the old one was rotated)."""
        self._transaction("UPDATE scans SET csv_at=?, csv_ino=? WHERE id=? AND state='written'", offsets)

    def done(self, ids: list[int], finished_at: str, stayed: set[int] = frozenset()) -> None:
        self._transaction("UPDATE scans SET state='done', csv_line=NULL, finished_at=?, stayed=? WHERE id=?",
                          [(finished_at, 1 if i in stayed else None, i) for i in ids])

    def drop(self, ids: list[int]) -> None:
        """Forgets rows whose file vanished or changed before its verdict was durable."""
        self._transaction("DELETE FROM scans WHERE id=? AND state='received'", [(i,) for i in ids])
