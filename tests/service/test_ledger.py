"""The ledger: durable rows, fingerprint lookups and the received -> written -> done states."""
import sqlite3

import pytest

from tumord.service.ledger import Fingerprint, Ledger
from tumord.service.records import Verdict


def fp(path="a.png", size=10, mtime=1, ino=7, sha="ab" * 32):
    return Fingerprint(path, size, mtime, ino, sha)


class TestLedger:
    def test_rows_move_through_the_states_and_survive_reopening(self, tmp_path):
        """received -> written -> done, each visible to a new connection (committed, not cached)."""
        db = tmp_path / "ledger.sqlite3"
        led = Ledger(db)
        (row,) = led.receive([("a.abab", fp(), "2025-01-01T00:00:00.000Z")])
        assert row.state == "received" and row.name == "a.abab"
        led.written([Verdict(row.id, row.name, "classified", "/x/a.png", label="tumor", model="v1", csv_at=100,
                             csv_line="line\r\n", csv_ino=5)])
        again = Ledger(db)
        (w,) = again.in_state("written")
        assert (w.csv_at, w.csv_line, w.moved_to) == (100, "line\r\n", "/x/a.png")
        led.done([row.id], "2025-01-01T00:00:01.000Z")
        assert again.in_state("written") == [] and again.counts() == {"classified": 1}
        assert again.find(fp()).state == "done" and again.find(fp()).csv_line is None
        led.close()
        again.close()

    def test_find_matches_what_was_judged_not_metadata(self, tmp_path):
        """Another inode, SHA-256 or path is another scan; another mtime (touch, cp -p, rsync -t) is
        not. Without a hash (bytes never read), size and mtime must match too."""
        led = Ledger(tmp_path / "l.sqlite3")
        led.receive([("a.1", fp(), "t")])
        assert led.find(fp()) is not None and led.find(fp(mtime=2)).name == "a.1"
        for other in (fp(ino=8), fp(sha="cd" * 32), fp(path="b.png"), fp(sha=None)):
            assert led.find(other) is None
        led.receive([("a.2", fp(sha=None), "t")])
        assert led.find(fp(sha=None)).name == "a.2"  # NULL hashes match each other
        assert led.find(fp(sha=None, mtime=2)) is None and led.find(fp(sha=None, size=11)) is None

    def test_an_old_ledger_gains_the_new_columns(self, tmp_path):
        """A ledger from before csv_ino and stayed opens, and keeps its rows."""
        db = sqlite3.connect(tmp_path / "l.sqlite3")
        db.execute("CREATE TABLE scans (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, path BLOB NOT NULL, "
                   "sha256 TEXT, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ino INTEGER NOT NULL, "
                   "received_at TEXT NOT NULL, state TEXT NOT NULL, outcome TEXT, label TEXT, error TEXT, "
                   "model TEXT, csv_at INTEGER, csv_line TEXT, moved_to TEXT, finished_at TEXT)")
        db.execute("INSERT INTO scans (name, path, size, mtime_ns, ino, sha256, received_at, state) "
                   "VALUES ('a.1', ?, 10, 1, 7, ?, 't', 'received')", (b"a.png", "ab" * 32))
        db.commit()
        db.close()
        led = Ledger(tmp_path / "l.sqlite3")
        assert led.find(fp()).name == "a.1" and led.find(fp()).csv_ino is None

    def test_names_are_unique(self, tmp_path):
        """A name can be reserved once; name_taken reports it."""
        led = Ledger(tmp_path / "l.sqlite3")
        led.receive([("x.1", fp(), "t")])
        assert led.name_taken("x.1") and not led.name_taken("x.2")
        with pytest.raises(sqlite3.IntegrityError):
            led.receive([("x.1", fp(ino=9), "t")])
        assert len(led.in_state("received")) == 1  # the failed transaction left nothing

    def test_drop_only_forgets_unfinished_rows(self, tmp_path):
        """drop() removes received rows and never a written or done one."""
        led = Ledger(tmp_path / "l.sqlite3")
        a, b = led.receive([("a", fp(), "t"), ("b", fp(ino=2), "t")])
        led.written([Verdict(b.id, "b", "failed", "/f/b", error="bad")])
        led.drop([a.id, b.id])
        assert [r.name for r in led.in_state("written")] == ["b"] and led.in_state("received") == []
