"""Faults an administrator or the machine causes while `tumord watch` runs (issue 12): verdicts.csv
rotated, the output disk full, the input folder deleted or replaced, the output unwritable, kill -9
between steps. Real processes, the real inotify observer, real folders, a real full file system.
"""
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.service.conftest import Watch, csv_rows, drop, ledger_rows, make_model, png, staged, verdicts
from tests.service.test_clients import assert_one_verdict_each, without_file_permission_override

PAUSE = ("tests.service.stoppoint", "pause", "1.5")


def drop_all(w, rng, n, prefix):
    digests = staged(w, rng, n, prefix)
    for name in digests:
        os.rename(w.root / "staging" / name, w.input / name)
    return digests


def restart_and_finish(w, n: int) -> None:
    """Starts the killed service again, without the stop point, and lets it judge the rest."""
    w.module = ["-m", "tumord.cli"]
    w.start()
    w.wait_until(lambda: os.listdir(w.input) == [], timeout=60, what="the rest")
    w.wait_until(lambda: len(verdicts(w.output)) == n, timeout=10, what=f"{n} verdicts")
    assert w.stop() == 0


def all_rows(output: Path) -> list[dict]:
    """The rows of verdicts.csv and of every rotated copy of it."""
    import csv

    rows = []
    for p in sorted(output.glob("verdicts*.csv")):
        with open(p, encoding="utf-8-sig", newline="") as f:
            rows += list(csv.DictReader(f))
    return rows


class TestRotatedCsv:
    @pytest.mark.parametrize("how", ["mv", "rm"])
    def test_verdicts_csv_renamed_or_deleted_while_running(self, service, rng, how):
        """Item 1: `mv verdicts.csv verdicts-2026-11.csv` (or rm) while running: a new verdicts.csv with
        its header takes the next rows; the rotated file is never written again; nothing stalls."""
        w = service().start()
        w.wait_for("service.ready")
        digests = drop_all(w, rng, 20, "a")
        w.wait_until(lambda: len(w.events("scan.classified")) >= 20, timeout=30, what="first 20")
        rotated = w.output / "verdicts-2026-11.csv"
        subprocess.run(["mv", str(w.output / "verdicts.csv"), str(rotated)] if how == "mv"
                       else ["rm", str(w.output / "verdicts.csv")], check=True)
        before = rotated.read_bytes() if how == "mv" else b""
        digests.update(drop_all(w, rng, 20, "b"))
        w.wait_until(lambda: len(w.events("scan.classified")) >= 40, timeout=30, what="20 more after the rotation")
        assert w.stop() == 0
        vs = verdicts(w.output)
        assert sorted(v["file"] for v in vs) == sorted(digests) and all(os.path.exists(v["archived_as"]) for v in vs)
        assert sorted(r["file"] for r in csv_rows(w.output)) == [f"b{i:03d}.png" for i in range(20)]
        if how == "mv":
            assert rotated.read_bytes() == before
            assert sorted(r["verdict"] for r in all_rows(w.output)) == sorted(v["verdict"] for v in verdicts(w.output))
        assert w.events("output.failing") == [] and os.listdir(w.input) == []

    def test_csv_rotated_while_a_batch_is_between_its_steps(self, service, rng):
        """Item 1: rotated after a batch's offsets were stored and before its lines were appended (the
        commit stage held there): its lines go to the new file, none into the rotated one, each once."""
        w = service(tool=PAUSE).start()
        w.wait_for("service.ready")
        drop(w.input, "first.png", png(rng))
        w.wait_for("stoppoint.reached")
        w.wait_for("scan.classified")
        drop(w.input, "second.png", png(rng))
        w.wait_for("stoppoint.reached", count=2)
        os.rename(w.output / "verdicts.csv", w.output / "verdicts-old.csv")
        before = (w.output / "verdicts-old.csv").read_bytes()
        w.wait_for("scan.classified", count=2)
        assert w.stop() == 0
        assert (w.output / "verdicts-old.csv").read_bytes() == before
        assert [r["file"] for r in csv_rows(w.output)] == ["second.png"]
        assert sorted(r["file"] for r in all_rows(w.output)) == ["first.png", "second.png"]


class TestFailingStage:
    def test_a_stage_that_keeps_failing_shows_in_status_and_stops_the_watchdog_pings(self, service, rng, notify):
        """Item 1, in general: the output folder made read-only (chmod 555): the commit stage fails on
        every attempt. STATUS says so, the log says why, WATCHDOG=1 stops after stall_seconds (so
        systemd would restart); chmod back and it resumes by itself, the scan judged once."""
        w = service(watch={"stall_seconds": 1.5}, env=notify.env(), wrap=without_file_permission_override()).start()
        w.wait_for("service.ready")
        os.chmod(w.output, 0o555)
        try:
            drop(w.input, "s.png", png(rng))
            status = notify.wait_status("failing: cannot write to")
            assert "queued 1" in status
            (failing,) = w.wait_for("output.failing")
            assert "Permission denied" in failing["reason"]
            time.sleep(4.0)  # the failure began before STATUS showed it: after 1.5 s no ping is sent
            assert notify.pings_since(time.monotonic() - 1.5) == 0
        finally:
            os.chmod(w.output, 0o755)
        w.wait_for("scan.classified", timeout=20)
        t = time.monotonic()
        time.sleep(1.0)
        assert notify.pings_since(t) >= 2 and "failing" not in notify.status()
        assert w.stop() == 0
        assert len(verdicts(w.output)) == 1 and len(csv_rows(w.output)) == 1


class TestMissingInput:
    def test_a_start_without_the_input_folder_waits_for_it(self, service, rng, notify):
        """Item 4: started before the input folder exists (a mount not there yet): the service comes
        up, says so in STATUS and the log, and judges scans once the folder appears."""
        w = service(env=notify.env())
        shutil.rmtree(w.input)
        w.start()
        w.wait_for("service.ready")
        (missing,) = w.wait_for("input.missing")
        assert str(w.input) in missing["folder"]
        assert "does not exist" in notify.wait_status("waiting: the input folder")
        w.input.mkdir()
        drop(w.input, "late.png", png(rng))
        w.wait_for("scan.classified", timeout=20)
        assert "waiting" not in notify.wait_status("classified 1")
        assert w.stop() == 0

    def test_input_folder_deleted_then_recreated(self, service, rng):
        """Item 4: `rm -r input` while running: the service keeps running and reports it; once
        `mkdir input` brings it back, new scans are judged within seconds (the rescan is 60 s off)."""
        w = service(watch={"rescan_seconds": 60.0}).start()
        w.wait_for("service.ready")
        subprocess.run(["rm", "-r", str(w.input)], check=True)
        w.wait_for("input.missing", timeout=10)
        time.sleep(1.0)
        assert w.proc.poll() is None, "the service exited"
        subprocess.run(["mkdir", str(w.input)], check=True)
        w.wait_for("input.watched_again", timeout=10)
        drop(w.input, "back.png", png(rng))
        w.wait_for("scan.classified", timeout=10)
        assert w.stop() == 0

    def test_input_folder_renamed_away_and_recreated(self, service, rng):
        """Item 4: `mv input input.old; mkdir input`: the new folder is watched (with a warning) and a
        scan dropped there is judged within seconds, not at the next rescan; input.old is left alone."""
        w = service(watch={"rescan_seconds": 60.0}).start()
        w.wait_for("service.ready")
        os.rename(w.input, w.root / "input.old")
        w.input.mkdir()
        w.wait_for("input.watched_again", timeout=10)
        drop(w.input, "new.png", png(rng))
        (v,) = w.wait_for("scan.classified", timeout=10)
        assert v["file"] == "new.png"
        drop(w.root / "input.old", "stray.png", png(rng))
        time.sleep(1.0)
        assert w.stop() == 0
        assert len(w.events("scan.classified")) == 1 and os.listdir(w.root / "input.old") == ["stray.png"]


class TestKilledBetweenSteps:
    def test_verdicts_completed_at_start_up_are_logged(self, service, rng):
        """Item 9: kill -9 after verdicts are written and before their rows are done: the next start
        completes them and logs scan.classified for each (recovered), so the log counts every verdict."""
        w = service(tool=("tests.service.stoppoint", "kill", "1"), watch={"batch_size": 64})
        w.start()
        w.wait_for("service.ready")
        digests = drop_all(w, rng, 30, "k")
        w.proc.wait(30)
        assert w.proc.returncode == -signal.SIGKILL
        written = [r for r in ledger_rows(w.output) if r["state"] == "written"]
        assert written
        restart_and_finish(w, 30)
        assert_one_verdict_each(w, digests)
        recovered = [e for e in w.events("scan.classified") if e.get("recovered")]
        assert len(recovered) == len(written)
        assert len(w.events("scan.classified")) == 30

    @pytest.mark.parametrize("point", ["rename", "written"])
    def test_killed_within_writing_the_verdicts(self, service, rng, point):
        """kill -9 in step 2 with the verdicts' bytes durable under temporary names (point rename), or
        with the verdicts renamed and durable but their rows not yet `written` (point written): no
        partial verdict is visible, and the next start judges each scan once, under the name reserved
        before the kill (the leftover temporary files swept, a renamed verdict replaced whole)."""
        w = service(tool=("tests.service.stoppoint", "kill", point), watch={"batch_size": 64})
        w.start()
        w.wait_for("service.ready")
        digests = drop_all(w, rng, 20, "w")
        w.proc.wait(30)
        assert w.proc.returncode == -signal.SIGKILL
        reserved = ledger_rows(w.output)
        assert reserved and {r["state"] for r in reserved} == {"received"}
        names = {r["name"] + ".json" for r in reserved}
        temporary = [p for p in w.output.iterdir() if p.name.startswith(".tumord-tmp.")]
        if point == "rename":
            assert len(temporary) == len(reserved) and verdicts(w.output) == []
        else:
            assert temporary == [] and {v["verdict"] for v in verdicts(w.output)} == names
        restart_and_finish(w, 20)
        assert_one_verdict_each(w, digests)
        assert names <= {v["verdict"] for v in verdicts(w.output)}
        assert not [p for p in w.output.rglob(".tumord-tmp.*")]
        assert len(w.events("startup.swept")) == len(temporary)


# --- the output file system full ------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs for input/ and output/ (one file system, as /var/lib/tumord); needs mount rights."""
    mount = tmp_path / "disk"
    mount.mkdir()
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mount)],
                         capture_output=True, text=True)
    if run.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({run.stderr.strip()}); run as root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Writes a file until the file system refuses with ENOSPC; returns it."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as e:
            assert e.errno == 28, e
    return filler


class TestDiskFull:
    def test_full_output_disk_waits_reports_restarts_and_resumes(self, small_disk, rng, tmp_path, notify):
        """Item 3: with the disk full the service starts anyway, says "no space left on <path>" in the
        log and STATUS (with the scans waiting counted), keeps the watchdog pings going (a restart
        would not help), exits 0 on SIGTERM, starts again, and once space returns judges every scan
        exactly once by itself."""
        make_model(tmp_path / "models")
        shutil.copytree(tmp_path / "models", small_disk / "models")
        w = Watch(small_disk, watch={"stall_seconds": 2.0, "batch_size": 2}, env=notify.env())
        w.output.mkdir()
        digests = staged(w, rng, 20, "f")  # on the same file system, so moving them in needs no space
        w.start()
        w.wait_for("service.ready")
        first = {n: digests[n] for n in sorted(digests)[:5]}
        for n in first:
            os.rename(w.root / "staging" / n, w.input / n)
        w.wait_until(lambda: len(verdicts(w.output)) == 5, timeout=30, what="5 verdicts before the disk fills")
        filler = fill(small_disk)
        try:
            for n in sorted(digests)[5:12]:
                os.rename(w.root / "staging" / n, w.input / n)
            notify.wait_status("no space left on", "queued 7")
            (full,) = w.wait_for("output.waiting", timeout=10)
            assert full["reason"] == f"no space left on {w.output}"
            time.sleep(3.0)  # longer than stall_seconds: waiting for space is not a stall
            assert notify.pings_since(time.monotonic() - 1.0) > 0
            t = time.monotonic()
            assert w.stop(timeout=15) == 0 and time.monotonic() - t < 10
            w.start()  # the disk is still full
            w.wait_for("service.ready", timeout=30)
            for n in sorted(digests)[12:]:
                os.rename(w.root / "staging" / n, w.input / n)
            notify.wait_status("no space left on", "queued 15")
            assert w.proc.poll() is None
        finally:
            filler.unlink()
        w.wait_until(lambda: os.listdir(w.input) == [], timeout=60, what="every scan judged once space returned")
        w.wait_for("output.resumed", timeout=10)
        assert w.stop() == 0
        assert_one_verdict_each(w, digests)
        assert all("Traceback" not in line and "cannot rollback" not in line for line in w.raw)
