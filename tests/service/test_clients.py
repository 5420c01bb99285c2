"""Scans dropped by real clients and ordinary user actions (issue 12): cp, cp -p, touch, rsync, tar, ln,
an upload client's temporary name, a writer that pauses, a file without read permission.

Each test drives a real `tumord watch` with the real inotify observer on real folders.
"""
import hashlib
import json
import os
import shutil
import subprocess
import time

import pytest

from tests.service.conftest import csv_rows, drop, png, staged, verdicts

PAUSE = ("tests.service.stoppoint", "pause", "1.5")  # the commit stage waits 1.5 s with verdicts written


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} not found (Debian package: {tool}; .ci/run installs it)")
    return path


def assert_one_verdict_each(w, digests: dict):
    """Exactly one verdict and one CSV row per scan, each archived where its verdict says."""
    vs = verdicts(w.output)
    assert sorted(v["file"] for v in vs) == sorted(digests), "missing or doubled verdicts"
    assert all(v["sha256"] == digests[v["file"]] for v in vs)
    assert sorted(r["verdict"] for r in csv_rows(w.output)) == sorted(v["verdict"] for v in vs)
    for v in vs:
        assert os.path.exists(v["archived_as"]), f"{v['verdict']} names an archive file that does not exist"
    assert os.listdir(w.input) == []


class TestMetadataChangedAfterJudging:
    def test_touch_between_judging_and_moving_gives_one_verdict(self, service, rng):
        """Item 2: `touch -m -d '1 hour ago'` on a scan already judged but not yet moved (the commit
        stage held there by a test tool): one verdict, one CSV row, and the archive file it names."""
        w = service(tool=PAUSE).start()
        w.wait_for("service.ready")
        digests = staged(w, rng, 1)
        subprocess.run(["cp", str(w.root / "staging" / "s000.png"), str(w.input / "t.png")], check=True)
        digests = {"t.png": digests["s000.png"]}
        w.wait_for("stoppoint.reached", timeout=20)
        subprocess.run(["touch", "-m", "-d", "1 hour ago", str(w.input / "t.png")], check=True)
        w.wait_until(lambda: os.listdir(w.input) == [], timeout=20, what="t.png archived")
        time.sleep(2.0)  # a second verdict would come within the settle window and one pause
        assert w.stop() == 0
        assert_one_verdict_each(w, digests)

    def test_a_burst_whose_mtimes_are_reset_after_copying_gets_one_verdict_each(self, service, rng):
        """Item 2 under load: 300 scans copied with cp, then their mtimes set back with `touch -c -d`
        while they are being judged (what cp -p, rsync -t after the fact or a time-fixing sync tool
        do): exactly 300 verdicts, each naming an archive file that exists."""
        w = service(watch={"batch_size": 16}).start()
        w.wait_for("service.ready")
        digests = staged(w, rng, 300)
        names = sorted(digests)
        subprocess.run(["cp", *[str(w.root / "staging" / n) for n in names], str(w.input)], check=True)
        # touch whatever is still there, again and again while the burst is judged: a fixed pause
        # before one touch could find every scan already judged on a fast machine
        touched = []
        for _ in range(20):
            left = [str(w.input / n) for n in names if (w.input / n).exists()]
            if not left:
                break
            subprocess.run(["touch", "-c", "-m", "-d", "1 hour ago", *left], check=True)
            touched.append(len(left))
            time.sleep(0.05)
        assert touched, "the first touch came after every scan was judged"
        w.wait_until(lambda: os.listdir(w.input) == [] and len(verdicts(w.output)) >= 300, timeout=120,
                     what=lambda: f"all scans judged (left in input: {sorted(os.listdir(w.input))[:10]}, "
                                  f"verdicts: {len(verdicts(w.output))})")
        time.sleep(2.0)
        assert w.stop() == 0
        assert_one_verdict_each(w, digests)

    def test_mtimes_set_alone_before_judging_do_not_hold_scans_back(self, service, rng):
        """`touch -m` sets the mtime alone, which Linux reports as a modification with no close after
        it. Scans touched so while they wait (a long settle_seconds holds them there, whatever the
        load) are judged once each. They were held as open for writing for an hour: the burst test
        above stalled when the touch reached scans still waiting."""
        w = service(watch={"settle_seconds": 2.0}).start()
        w.wait_for("service.ready")
        digests = staged(w, rng, 30)
        names = sorted(digests)
        subprocess.run(["cp", *[str(w.root / "staging" / n) for n in names], str(w.input)], check=True)
        subprocess.run(["touch", "-c", "-m", "-d", "1 hour ago", *[str(w.input / n) for n in names]], check=True)
        w.wait_until(lambda: os.listdir(w.input) == [] and len(verdicts(w.output)) >= 30, timeout=30,
                     what=lambda: f"all scans judged (left in input: {len(os.listdir(w.input))})")
        assert w.stop() == 0
        assert_one_verdict_each(w, digests)
        assert w.events("file.waiting") == []

    def test_bytes_changed_after_judging_are_judged_again_and_both_verdicts_say_so(self, service, rng):
        """Item 2: new bytes written into the same file (same inode) after it was judged: it is not
        archived under the first verdict, which says why; the new bytes get a second verdict that
        names the first under `replaces`."""
        w = service(tool=PAUSE).start()
        w.wait_for("service.ready")
        first, second = png(rng), png(rng)
        drop(w.input, "c.png", first)
        w.wait_for("stoppoint.reached", timeout=20)
        with open(w.input / "c.png", "r+b") as f:  # the same inode, other bytes
            f.write(second)
            f.truncate()
        w.wait_until(lambda: len(verdicts(w.output)) == 2 and os.listdir(w.input) == [], timeout=30,
                     what="the second verdict")
        assert w.stop() == 0
        old, new = sorted(verdicts(w.output), key=lambda v: v["classified_at"])
        assert old["sha256"] == hashlib.sha256(first).hexdigest() and old["archived_as"] == ""
        assert "changed" in old["changed_after"]
        assert new["sha256"] == hashlib.sha256(second).hexdigest() and new["replaces"] == old["verdict"]
        assert open(new["archived_as"], "rb").read() == second
        assert len(w.events("scan.changed_after_judging")) == 1 and len(csv_rows(w.output)) == 2



class TestClients:
    def test_rsync_and_tar_drops_are_judged_once_each(self, service, rng, tmp_path):
        """rsync (writes `.name.XXXXXX` then renames, then sets times) and tar -x (writes in place, then
        sets times): one verdict per scan, nothing failed."""
        rsync, tar = need("rsync"), need("tar")
        w = service().start()
        w.wait_for("service.ready")
        digests = staged(w, rng, 40, prefix="r")
        subprocess.run([rsync, "-a", f"{w.root / 'staging'}/", f"{w.input}/"], check=True)
        packed = tmp_path / "scans"
        packed.mkdir()
        for name, sha in staged(w, rng, 40, prefix="t").items():
            shutil.move(w.root / "staging" / name, packed / name)
            digests[name] = sha
        subprocess.run([tar, "-cf", str(tmp_path / "scans.tar"), "-C", str(packed), "."], check=True)
        subprocess.run([tar, "-xf", str(tmp_path / "scans.tar"), "-C", str(w.input)], check=True)
        w.wait_until(lambda: len(verdicts(w.output)) >= 80 and os.listdir(w.input) == [], timeout=60,
                     what="80 verdicts")
        assert w.stop() == 0
        assert_one_verdict_each(w, digests)
        assert w.events("scan.failed") == []

    def test_upload_client_temporary_names_wait_for_the_rename(self, service, rng):
        """Item 5: WinSCP uploads to `name.filepart`, closes, and renames 0.2-0.4 s later; Office-style
        `~$name` files are scratch. Neither is judged: one verdict under the final name, no error."""
        w = service().start()
        w.wait_for("service.ready")
        data = png(rng)
        for name, pause in (("a.png", 0.2), ("b.png", 0.4)):
            with open(w.input / f"{name}.filepart", "wb") as f:
                f.write(data[:100])
                time.sleep(0.05)
                f.write(data[100:])
            time.sleep(pause)
            os.rename(w.input / f"{name}.filepart", w.input / name)
        (w.input / "~$lock.png").write_bytes(data)
        w.wait_until(lambda: len(w.events("scan.classified")) >= 2, timeout=20, what="two verdicts")
        time.sleep(1.0)
        assert w.stop() == 0
        assert sorted(v["file"] for v in verdicts(w.output)) == ["a.png", "b.png"]
        assert w.events("scan.failed") == [] and list((w.output / "failed").iterdir()) == []
        assert os.listdir(w.input) == ["~$lock.png"]

    def test_temporary_names_are_a_setting(self, service, rng):
        """watch.temporary_names replaces the list: here `*.upload` is temporary and `.filepart` is not."""
        w = service(watch={"temporary_names": ["*.upload"]}).start()
        w.wait_for("service.ready")
        (w.input / "x.png.upload").write_bytes(png(rng))
        time.sleep(1.0)
        assert w.events("scan.classified") == [] and w.events("scan.failed") == []
        os.rename(w.input / "x.png.upload", w.input / "x.png")
        w.wait_for("scan.classified")
        assert w.stop() == 0

    def test_a_writer_that_pauses_longer_than_stable_seconds_is_waited_for(self, service, rng):
        """Item 6: a writer holds the file open and pauses 3x stable_seconds half way: the half file is
        never failed nor classified; once closed, the whole scan gets one verdict."""
        w = service().start()  # stable_seconds 0.5
        w.wait_for("service.ready")
        data = png(rng, size=64)
        with open(w.input / "paused.png", "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            time.sleep(1.5)
            assert w.events("scan.failed") == [] and w.events("scan.classified") == []
            f.write(data[len(data) // 2:])
        (v,) = w.wait_for("scan.classified", timeout=20)
        assert w.stop() == 0
        assert v["file"] == "paused.png" and w.events("scan.failed") == []
        assert verdicts(w.output)[0]["sha256"] == hashlib.sha256(data).hexdigest()

    def test_a_truncated_file_that_holds_still_still_fails(self, service, rng):
        """Item 6, the other side: a truncated PNG moved in whole (closed, unchanged) still goes to failed/."""
        w = service().start()
        w.wait_for("service.ready")
        data = png(rng)
        drop(w.input, "half.png", data[: len(data) // 2])
        (f,) = w.wait_for("scan.failed", timeout=20)
        assert "truncated" in f["reason"]
        assert w.stop() == 0

    def test_hard_linked_drop_is_archived_as_a_copy(self, service, rng, tmp_path):
        """Item 9: `ln user.png input/` then judged: the archive is a copy, not another name of the
        user's file, which stays as it was."""
        w = service().start()
        w.wait_for("service.ready")
        mine = tmp_path / "mine.png"
        data = png(rng)
        mine.write_bytes(data)
        subprocess.run(["ln", str(mine), str(w.input / "linked.png")], check=True)
        w.wait_for("scan.classified")
        assert w.stop() == 0
        (v,) = verdicts(w.output)
        archived = os.stat(v["archived_as"])
        assert archived.st_nlink == 1 and not os.path.samestat(archived, os.stat(mine))
        assert os.stat(mine).st_nlink == 1 and mine.read_bytes() == data == open(v["archived_as"], "rb").read()

    def test_subfolders_without_recursive_are_logged_once(self, service, rng):
        """Item 9: with recursive: false, a subfolder of scans is skipped with one log line naming it."""
        w = service().start()
        w.wait_for("service.ready")
        (w.input / "sub").mkdir()
        for i in range(3):
            subprocess.run(["cp", str(drop(w.root, f"x{i}.png", png(rng))), str(w.input / "sub")], check=True)
        time.sleep(2.5)  # two rescans
        assert w.stop() == 0
        skipped = [e for e in w.events("file.skipped") if e["file"] == "sub"]
        assert len(skipped) == 1 and "recursive" in skipped[0]["reason"]
        assert w.events("scan.classified") == []


def without_file_permission_override() -> list[str]:
    """As root, the service would read any file; dropping the two capabilities that bypass file
    permissions (as the systemd unit's CapabilityBoundingSet= does) makes it an ordinary reader."""
    if os.geteuid() != 0:
        return []
    return [need("setpriv"), "--bounding-set", "-dac_override,-dac_read_search", "--"]


class TestPermissions:
    def test_unreadable_scan_is_retried_then_judged_once_its_permission_is_fixed(self, service, rng):
        """Item 7: a scan without read permission waits (not failed); `chmod` makes it judged."""
        w = service(wrap=without_file_permission_override()).start()
        w.wait_for("service.ready")
        data = png(rng)
        staging = w.root / "staging"
        staging.mkdir()
        (staging / "locked.png").write_bytes(data)
        os.chmod(staging / "locked.png", 0)
        os.rename(staging / "locked.png", w.input / "locked.png")
        (wait,) = w.wait_for("scan.waiting", timeout=20)
        assert "Permission denied" in wait["reason"]
        time.sleep(1.0)
        assert w.events("scan.failed") == [] and w.events("scan.classified") == []
        subprocess.run(["chmod", "644", str(w.input / "locked.png")], check=True)
        (v,) = w.wait_for("scan.classified", timeout=20)
        assert w.stop() == 0
        assert v["file"] == "locked.png" and verdicts(w.output)[0]["sha256"] == hashlib.sha256(data).hexdigest()

    def test_a_scan_unreadable_for_retry_seconds_fails_saying_what_to_do(self, service, rng):
        """Item 7: still unreadable after watch.retry_seconds: failed, and the error JSON says what to do."""
        w = service(watch={"retry_seconds": 2.0}, wrap=without_file_permission_override()).start()
        w.wait_for("service.ready")
        staging = w.root / "staging"
        staging.mkdir()
        (staging / "never.png").write_bytes(png(rng))
        os.chmod(staging / "never.png", 0)
        os.rename(staging / "never.png", w.input / "never.png")
        (f,) = w.wait_for("scan.failed", timeout=30)
        assert w.stop() == 0
        (err,) = [json.loads(p.read_text()) for p in (w.output / "failed").glob("*.error.json")]
        assert "Permission denied" in err["error"] and "read permission" in err["what_to_do"]
        assert "failed/" in err["what_to_do"] and len(w.events("scan.waiting")) == 1
