"""The ledger: durable rows, fingerprint lookups and the received -> written -> done states."""
import sqlite3

import pytest

from tumord.service.ledger import Fingerprint, Ledger


def fp(path="a.png", size=10, mtime=1, ino=7, sha="ab" * 32):
    return Fingerprint(path, size, mtime, ino, sha)


class TestLedger:
    def test_rows_move_through_the_states_and_survive_reopening(self, tmp_path):
        """received -> written -> done, each visible to a new connection (committed, not cached)."""
        db = tmp_path / "ledger.sqlite3"
        led = Ledger(db)
        (row,) = led.receive([("a.abab", fp(), "2025-01-01T00:00:00.000Z")])
        assert row.state == "received" and row.name == "a.abab"
        led.written([{"id": row.id, "name": row.name, "outcome": "classified", "label": "tumor", "error": None,
                      "model": "v1", "csv_at": 100, "csv_line": "line\r\n", "moved_to": "/x/a.png"}])
        again = Ledger(db)
        (w,) = again.in_state("written")
        assert (w.csv_at, w.csv_line, w.moved_to) == (100, "line\r\n", "/x/a.png")
        led.done([row.id], "2025-01-01T00:00:01.000Z")
        assert again.in_state("written") == [] and again.counts() == {"classified": 1}
        assert again.find(fp()).state == "done" and again.find(fp()).csv_line is None
        led.close()
        again.close()

    def test_find_matches_the_whole_fingerprint(self, tmp_path):
        """Another inode, mtime, size or SHA-256 under the same name is another scan."""
        led = Ledger(tmp_path / "l.sqlite3")
        led.receive([("a.1", fp(), "t")])
        assert led.find(fp()) is not None
        for other in (fp(ino=8), fp(mtime=2), fp(size=11), fp(sha="cd" * 32), fp(path="b.png"), fp(sha=None)):
            assert led.find(other) is None
        led.receive([("a.2", fp(sha=None), "t")])
        assert led.find(fp(sha=None)).name == "a.2"  # NULL hashes match each other

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
        led.written([{"id": b.id, "name": "b", "outcome": "failed", "label": None, "error": "bad", "model": None,
                      "csv_at": None, "csv_line": None, "moved_to": "/f/b"}])
        led.drop([a.id, b.id])
        assert [r.name for r in led.in_state("written")] == ["b"] and led.in_state("received") == []
