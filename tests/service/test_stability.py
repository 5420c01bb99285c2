"""Stability: a file is complete once its signature holds still for the right window."""
import os
import threading
import time

from tumord.service.stability import Stability, signature


def wait_ready(st: Stability, timeout: float) -> tuple[list[str], float]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        ready = st.pop_ready()
        if ready:
            return ready, time.monotonic() - t0
        time.sleep(0.01)
    return [], timeout


class TestStability:
    def test_closed_file_is_ready_after_the_short_window(self, tmp_path):
        """A file closed after writing is ready after `settle`, not `stable`."""
        p = tmp_path / "a.png"
        p.write_bytes(b"x" * 100)
        st = Stability(settle=0.05, stable=5.0)
        st.note(str(p), closed=True)
        ready, waited = wait_ready(st, 2.0)
        assert ready == [str(p)] and waited < 1.0 and len(st) == 0

    def test_file_seen_without_close_waits_the_long_window(self, tmp_path):
        """A file only seen (created, rescanned) waits for `stable`."""
        p = tmp_path / "a.png"
        p.write_bytes(b"x")
        st = Stability(settle=0.01, stable=0.4)
        st.note(str(p), closed=False)
        ready, waited = wait_ready(st, 2.0)
        assert ready == [str(p)] and waited >= 0.35

    def test_slow_writer_is_not_ready_until_it_stops(self, tmp_path):
        """Bytes appended every 100 ms keep the file pending; it is ready only after the last write."""
        p = tmp_path / "slow.png"
        st = Stability(settle=0.01, stable=0.4)
        done = threading.Event()

        def write():
            with open(p, "wb") as f:
                for _ in range(15):
                    f.write(b"abc")
                    f.flush()
                    time.sleep(0.1)
            done.set()

        threading.Thread(target=write).start()
        time.sleep(0.05)
        st.note(str(p), closed=False)
        while not done.is_set():
            assert st.pop_ready() == [], "ready while still being written"
            time.sleep(0.02)
        ready, _ = wait_ready(st, 2.0)
        assert ready == [str(p)] and p.stat().st_size == 45

    def test_metadata_change_restarts_the_window(self, tmp_path):
        """A utime after close (cp -p) changes ctime, so the file waits again."""
        p = tmp_path / "a.png"
        p.write_bytes(b"x")
        st = Stability(settle=0.2, stable=5.0)
        st.note(str(p), closed=True)
        time.sleep(0.1)
        os.utime(p, ns=(0, 0))
        time.sleep(0.15)
        assert st.pop_ready() == []  # first check saw a new signature
        ready, _ = wait_ready(st, 2.0)
        assert ready == [str(p)]

    def test_vanished_and_forgotten_files_are_dropped(self, tmp_path):
        """A file removed before its window ends, or forgotten, is never reported."""
        a, b = tmp_path / "a.png", tmp_path / "b.png"
        a.write_bytes(b"1")
        b.write_bytes(b"2")
        st = Stability(settle=0.05, stable=0.05)
        st.note(str(a), closed=True)
        st.note(str(b), closed=True)
        a.unlink()
        st.forget(str(b))
        time.sleep(0.1)
        assert st.pop_ready() == [] and len(st) == 0 and st.next_due() is None

    def test_signature_of_missing_file_is_none(self, tmp_path):
        """signature() is None for a path that does not exist."""
        assert signature(str(tmp_path / "nope")) is None
