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

from tests.service.conftest import csv_rows, drop, ledger_rows, png, verdicts

PAUSE = ("tests.service.stoppoint", "pause", "1.5")  # the commit stage waits 1.5 s with verdicts written


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} not found (Debian package: {tool}; .ci/run installs it)")
    return path


def staged(w, rng, n: int, prefix: str = "s") -> dict[str, str]:
    """n scans in a staging folder beside input/; name -> SHA-256."""
    staging = w.root / "staging"
    staging.mkdir(exist_ok=True)
    digests = {}
    for i in range(n):
        data = png(rng)
        name = f"{prefix}{i:03d}.png"
        (staging / name).write_bytes(data)
        digests[name] = hashlib.sha256(data).hexdigest()
    return digests


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
        time.sleep(0.3)
        left = [str(w.input / n) for n in names if (w.input / n).exists()]
        subprocess.run(["touch", "-c", "-m", "-d", "1 hour ago", *left], check=True)
        w.wait_until(lambda: os.listdir(w.input) == [] and len(verdicts(w.output)) >= 300, timeout=120,
                     what="all scans judged")
        time.sleep(2.0)
        assert w.stop() == 0
        assert_one_verdict_each(w, digests)

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

