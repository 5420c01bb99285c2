"""Intake with real observers on temporary folders: what becomes a scan, when, and only once."""
import contextlib
import logging
import os
import queue
import shutil
import subprocess
import threading
import time

import pytest
from structlog.testing import capture_logs
from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.polling import PollingObserver

from tumord.logs import get_logger
from tumord.service.intake import Intake
from tumord.service.records import Inflight


@contextlib.contextmanager
def running(root, *, observer="native", watch=True, recursive=False, rescan=60.0, settle=0.05, stable=0.4):
    ready, inflight = queue.Queue(), Inflight()
    obs = PollingObserver(timeout=0.1) if observer == "polling" else InotifyObserver(generate_full_events=True)
    obs.start()
    intake = Intake(root, recursive=recursive, settle=settle, stable=stable, rescan_seconds=rescan,
                    ready=ready, inflight=inflight, log=get_logger(), observer=obs if watch else None,
                    writers=observer == "native")
    intake.start()
    try:
        yield intake, ready, inflight
    finally:
        obs.stop()
        intake.stop()
        obs.join()
        intake.join()


def collect(ready: queue.Queue, seconds: float) -> list[str]:
    out, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            out.append(os.path.basename(ready.get(timeout=0.05).path))
        except queue.Empty:
            pass
    return out


class TestIntake:
    @pytest.mark.parametrize("observer", ["native", "polling"])
    def test_written_and_moved_files_arrive_once(self, tmp_path, observer):
        """Files written in place or moved in are handed on exactly once, with either observer."""
        root, outside = tmp_path / "in", tmp_path / "staging"
        root.mkdir()
        outside.mkdir()
        with running(root, observer=observer) as (_, ready, _):
            time.sleep(0.2)
            (root / "written.png").write_bytes(b"a" * 50)
            (outside / "moved.png").write_bytes(b"b" * 50)
            os.replace(outside / "moved.png", root / "moved.png")
            got = collect(ready, 1.5)
        assert sorted(got) == ["moved.png", "written.png"]

    def test_temporary_names_wait_for_their_rename(self, tmp_path):
        """.part/.tmp/~/dot-files are ignored (logged once) until renamed to a real name."""
        root = tmp_path / "in"
        root.mkdir()
        with capture_logs() as logs, running(root) as (_, ready, _):
            time.sleep(0.2)
            for name in ("a.png.part", "b.png.tmp", "c.png~", ".d.png"):
                (root / name).write_bytes(b"x" * 10)
            (root / "a.png.part").write_bytes(b"x" * 20)  # written again: still logged once
            assert collect(ready, 0.8) == []
            os.replace(root / "a.png.part", root / "a.png")
            assert collect(ready, 0.8) == ["a.png"]
        skipped = sorted(e["file"] for e in logs if e["event"] == "file.skipped")
        assert skipped == [".d.png", "a.png.part", "b.png.tmp", "c.png~"]

    def test_slow_writer_is_handed_on_only_when_complete(self, tmp_path):
        """A file written a few bytes every 100 ms for 1.5 s arrives once, at its final size."""
        root = tmp_path / "in"
        root.mkdir()
        with running(root, stable=0.5) as (_, ready, _):
            time.sleep(0.2)
            with open(root / "slow.png", "wb") as f:
                for _ in range(15):
                    f.write(b"abcd")
                    f.flush()
                    time.sleep(0.1)
                    assert ready.empty(), "handed on while still being written"
            item = ready.get(timeout=3)
            assert os.path.getsize(item.path) == 60 and collect(ready, 0.5) == []

    def test_a_moved_in_file_is_handed_on_at_once_a_closed_one_after_settle(self, tmp_path):
        """A rename into the folder is a complete file: no settle window (idle latency). A file closed
        after writing in place still waits `settle`, in case its writer reopens it."""
        root, outside = tmp_path / "in", tmp_path / "staging"
        root.mkdir()
        outside.mkdir()
        with running(root, settle=2.0) as (_, ready, _):
            time.sleep(0.2)
            (outside / "moved.png").write_bytes(b"m" * 50)
            os.replace(outside / "moved.png", root / "moved.png")
            (root / "written.png").write_bytes(b"w" * 50)
            assert collect(ready, 1.0) == ["moved.png"]
            assert collect(ready, 2.0) == ["written.png"]

    def test_mtime_set_alone_after_closing_does_not_hold_the_file_back(self, tmp_path):
        """Linux reports `touch -m` (the mtime alone, as sync tools set it) as a modification with no
        close to follow; a closed file touched so while it waits must still be handed on, once. It
        was held as open for writing for retry_seconds (an hour): the burst test's stall."""
        if shutil.which("touch") is None:
            pytest.skip("touch not found (coreutils)")
        root = tmp_path / "in"
        root.mkdir()
        with running(root, settle=3.0, stable=0.4) as (_, ready, _):  # closed files wait 3 s: touched while waiting
            time.sleep(0.2)
            (root / "a.png").write_bytes(b"x" * 50)  # created, written, closed
            subprocess.run(["touch", "-c", "-m", "-d", "1 hour ago", str(root / "a.png")], check=True)
            assert collect(ready, 2.5) == ["a.png"]  # after the stable window that the change restarts

    def test_a_file_created_and_not_yet_closed_is_held_however_its_writes_look(self, tmp_path):
        """The other side: a new file still open is held even when its modify events come after its
        size stopped changing (the intake read the size after the write), until it is closed."""
        if shutil.which("touch") is None:
            pytest.skip("touch not found (coreutils)")
        root = tmp_path / "in"
        root.mkdir()
        with running(root, stable=0.3) as (_, ready, _):
            time.sleep(0.2)
            with open(root / "open.png", "wb") as f:
                f.write(b"x" * 50)
                f.flush()
                time.sleep(0.1)
                subprocess.run(["touch", "-c", "-m", str(root / "open.png")], check=True)  # a modify, same size
                assert collect(ready, 1.2) == [], "handed on while still open for writing"
            assert collect(ready, 1.0) == ["open.png"]

    def test_backlog_and_lost_events(self, tmp_path):
        """Files already there at start arrive; so do files whose events were lost (found by the rescan)."""
        root = tmp_path / "in"
        root.mkdir()
        (root / "old.png").write_bytes(b"x")
        with running(root, watch=False, rescan=0.5) as (_, ready, _):  # no observer events at all
            assert collect(ready, 1.0) == ["old.png"]
            (root / "unseen.png").write_bytes(b"y")
            assert collect(ready, 2.0) == ["unseen.png"]

    def test_overflow_warning_triggers_a_rescan(self, tmp_path):
        """When watchdog warns that the kernel dropped events, the folder is rescanned at once."""
        root = tmp_path / "in"
        root.mkdir()
        with capture_logs() as logs, running(root, watch=False, rescan=60.0) as (_, ready, _):
            assert collect(ready, 0.3) == []
            (root / "lost.png").write_bytes(b"x")
            logging.getLogger("watchdog.observers.inotify_c").warning("Inotify queue overflowed")
            assert collect(ready, 1.5) == ["lost.png"]
        assert any(e["event"] == "observer.warning" for e in logs)

    def test_folders(self, tmp_path):
        """Subfolders are ignored unless recursive; a folder named like an image is itself a candidate."""
        root = tmp_path / "in"
        (root / "sub").mkdir(parents=True)
        (root / "sub" / "deep.png").write_bytes(b"x")
        (root / ".hidden").mkdir()
        (root / ".hidden" / "h.png").write_bytes(b"x")
        (root / "odd.png").mkdir()
        (root / "odd.png" / "inner.png").write_bytes(b"x")
        with running(root) as (_, ready, _):
            assert collect(ready, 1.0) == ["odd.png"]
        with running(root, recursive=True) as (_, ready, _):
            time.sleep(0.2)
            (root / "sub" / "new.png").write_bytes(b"y")
            assert sorted(collect(ready, 1.2)) == ["deep.png", "new.png", "odd.png"]

    def test_a_path_in_flight_is_held_back(self, tmp_path):
        """A new file under a name still being processed waits until that one has left."""
        root = tmp_path / "in"
        root.mkdir()
        with running(root) as (intake, ready, inflight):
            time.sleep(0.2)
            (root / "a.png").write_bytes(b"1")
            first = ready.get(timeout=2)
            (root / "a.png").write_bytes(b"22")  # replaced while the first is in flight
            assert collect(ready, 0.6) == []
            threading.Timer(0.1, inflight.discard, [first.path]).start()
            assert collect(ready, 1.0) == ["a.png"]
