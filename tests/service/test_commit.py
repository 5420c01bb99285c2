"""The commit stage and its crash recovery: each crash point, rebuilt with the real steps, ends exactly once."""
import json
import os
import queue
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.service.conftest import csv_rows, ledger_rows, make_model, png, verdicts
from tumord.logs import get_logger
from tumord.model import checkpoint
from tumord.model.registry import current_model_path
from tumord.service.classify import Classify, Limits
from tumord.service.commit import Commit
from tumord.service.moves import move as _move
from tumord.service.records import Counters, Folders, Inflight, Ready
from tumord.service.ledger import Ledger
from tumord.service.swap import ModelSlot
from tumord.service.verdicts import VerdictCsv


class Stage:
    """Real ledger, CSV, folders, classifier and commit stage in tmp_path; `restart()` is a new process."""

    def __init__(self, tmp_path, delete=False):
        make_model(tmp_path / "models")
        self.model = checkpoint.load(current_model_path(tmp_path / "models"))
        out = tmp_path / "out"
        self.folders = Folders(tmp_path / "in", out, out / "archive", out / "failed", delete)
        for p in (self.folders.input, self.folders.archive, self.folders.failed):
            p.mkdir(parents=True, exist_ok=True)
        self.restart()

    def restart(self):
        if hasattr(self, "commit"):  # the previous "process" is gone
            self.close()
        self.ledger = Ledger(self.folders.output / "ledger.sqlite3")
        self.csv = VerdictCsv(self.folders.output / "verdicts.csv", self.model.class_names)
        self.commit = Commit(batches=queue.Queue(), ledger=self.ledger, csv=self.csv, folders=self.folders,
                             inflight=Inflight(), counters=Counters(), log=get_logger())
        recovered = self.commit.recover()
        self.csv.open()
        return recovered

    def batch(self, *names):
        c = Classify(root=self.folders.input, ready=queue.Queue(), out=queue.Queue(), slot=ModelSlot(self.model),
                     ledger=self.ledger, limits=Limits(10**8, 10**8, stable_seconds=0), batch_size=64, threads=2, inflight=Inflight(),
                     retry=lambda p, why=None: None, log=get_logger())
        b = c.classify([Ready(str(self.folders.input / n), "2025-01-01T00:00:00.000Z", time.monotonic())
                        for n in names])
        c.judge.close()
        return b

    def drop(self, name, data):
        (self.folders.input / name).write_bytes(data)

    def close(self):
        self.commit.io.shutdown()
        self.ledger.close()


@pytest.fixture
def stage(tmp_path):
    st = Stage(tmp_path)
    yield st
    st.close()


def assert_exactly_once(stage, names):
    out = stage.folders.output
    vs = verdicts(out)
    assert sorted(v["file"] for v in vs) == sorted(names)
    rows = csv_rows(out)
    assert sorted(r["verdict"] for r in rows) == sorted(v["verdict"] for v in vs)
    assert [r["state"] for r in ledger_rows(out)] == ["done"] * len(names)
    assert os.listdir(stage.folders.input) == []
    assert len(os.listdir(stage.folders.archive)) == len(names)


class TestCommit:
    def test_verdict_row_archive_and_error_files(self, stage, rng):
        """A good scan gets a full verdict, a CSV row and an archive copy; a bad one an error JSON in failed/."""
        stage.drop("a b.png", png(rng))
        stage.drop("bad.png", b"not an image")
        stage.commit.commit(stage.batch("a b.png", "bad.png"))
        (v,) = verdicts(stage.folders.output)
        assert {"file", "sha256", "label", "probabilities", "confidence", "model", "received_at", "classified_at",
                "tumord_version"} <= set(v)
        assert v["model"] == stage.model.identity and v["confidence"] == max(v["probabilities"].values())
        assert v["received_at"].endswith("Z") and v["classified_at"].endswith("Z")
        (row,) = csv_rows(stage.folders.output)
        assert row["file"] == "a b.png" and float(row["probability_tumor"]) == v["probabilities"]["tumor"]
        assert os.listdir(stage.folders.archive) == [v["verdict"].replace(".json", ".png")]
        err = json.loads(next(stage.folders.failed.glob("*.error.json")).read_text())
        assert err["file"] == "bad.png" and "contains text" in err["error"]
        assert (stage.folders.failed / os.path.basename(err["moved_to"])).read_bytes() == b"not an image"
        assert [r["outcome"] for r in ledger_rows(stage.folders.output)] == ["classified", "failed"]

    def test_same_name_dropped_again_gets_its_own_verdict(self, stage, rng):
        """New bytes, and even the same bytes, under a name seen before get a new verdict each."""
        first = png(rng)
        for data in (first, png(rng), first):
            stage.drop("scan.png", data)
            stage.commit.commit(stage.batch("scan.png"))
        names = sorted(v["verdict"] for v in verdicts(stage.folders.output))
        assert len(names) == 3 and len(set(names)) == 3
        assert any(n.endswith("-2.json") for n in names)

    def test_crash_after_written_with_a_torn_csv_line(self, stage, rng):
        """Killed while appending to verdicts.csv: restart leaves each row once and finishes the moves."""
        names = [f"s{i}.png" for i in range(4)]
        for n in names:
            stage.drop(n, png(rng))
        b = stage.batch(*names)
        updates = stage.commit.record(b.scans, [b.model] * len(b.scans))
        lines = "".join(u.csv_line for u in updates)
        with open(stage.csv.path, "ab") as f:
            f.write(lines.encode()[: len(lines) // 2])  # the crash cut the write in half
        assert stage.restart() == {"finished": 4, "abandoned": 0}
        assert_exactly_once(stage, names)

    def test_batches_waiting_are_committed_as_one_group_and_recovered_as_one(self, stage, rng):
        """Group commit: two judged batches take each step together (one `written` set, each scan with
        its batch's model); killed with the CSV half appended, the restart finishes both, exactly once.
        Then commit(b3, b4) goes through every step for both."""
        names = [f"g{i}.png" for i in range(4)]
        for n in names:
            stage.drop(n, png(rng))
        b1, b2 = stage.batch("g0.png"), stage.batch("g1.png")
        updates = stage.commit.record(b1.scans + b2.scans, [b1.model] * len(b1.scans) + [b2.model] * len(b2.scans))
        assert [r["state"] for r in ledger_rows(stage.folders.output)] == ["written", "written"]
        lines = "".join(u.csv_line for u in updates)
        with open(stage.csv.path, "ab") as f:
            f.write(lines.encode()[: len(lines) // 3])
        assert stage.restart() == {"finished": 2, "abandoned": 0}
        stage.commit.commit(stage.batch("g2.png"), stage.batch("g3.png"))
        assert_exactly_once(stage, names)

    def test_crash_after_moves_before_done(self, stage, rng):
        """Killed after the CSV append and the moves but before the ledger said done: nothing doubles."""
        names = ["x.png", "y.png"]
        for n in names:
            stage.drop(n, png(rng))
        b = stage.batch(*names)
        updates = stage.commit.record(b.scans, [b.model] * len(b.scans))
        stage.csv.append("".join(u.csv_line for u in updates))
        for u, s in zip(updates, b.scans):
            os.rename(s.path, u.moved_to)
        stage.restart()
        assert_exactly_once(stage, names)

    def test_crash_after_name_reserved_resumes_under_the_same_name(self, stage, rng):
        """Killed after reserving (and even writing) a verdict: the file is judged again under the same name."""
        stage.drop("r.png", png(rng))
        b = stage.batch("r.png")
        (row,) = stage.commit._reserve(b.scans)
        (stage.folders.output / f"{row.name}.json").write_text('{"stale": true}')
        assert stage.restart() == {"finished": 0, "abandoned": 0}
        b = stage.batch("r.png")
        assert b.scans[0].previous.name == row.name
        stage.commit.commit(b)
        assert_exactly_once(stage, ["r.png"])
        assert verdicts(stage.folders.output)[0]["verdict"] == f"{row.name}.json"

    def test_reserved_scan_whose_file_vanished_is_abandoned(self, stage, rng):
        """A reserved row whose file is gone at restart loses its row and its unfinished verdict."""
        stage.drop("v.png", png(rng))
        b = stage.batch("v.png")
        (row,) = stage.commit._reserve(b.scans)
        (stage.folders.output / f"{row.name}.json").write_text("{}")
        os.unlink(stage.folders.input / "v.png")
        assert stage.restart() == {"finished": 0, "abandoned": 1}
        assert verdicts(stage.folders.output) == [] and ledger_rows(stage.folders.output) == []

    def test_judged_file_still_in_the_folder_is_only_moved(self, stage, rng):
        """A file whose row is done (its move failed earlier) is moved out, not judged again."""
        stage.drop("d.png", png(rng))
        b = stage.batch("d.png")
        updates = stage.commit.record(b.scans, [b.model] * len(b.scans))
        stage.csv.append("".join(u.csv_line for u in updates))
        stage.ledger.done([updates[0].id], "t")  # as if the rename had failed
        stage.commit.commit(stage.batch("d.png"))
        assert_exactly_once(stage, ["d.png"])
        assert stage.commit.counters.skipped == 1

    def test_archive_on_another_file_system(self, tmp_path, rng):
        """Input and archive on different file systems (or bind mounts, as under systemd): moved by copy."""
        shm = Path("/dev/shm")
        if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
            pytest.skip("needs /dev/shm on another file system than the temporary folder")
        other = Path(tempfile.mkdtemp(dir=shm))
        try:
            src = tmp_path / "scan.png"
            src.write_bytes(png(rng))
            data = src.read_bytes()
            _move(src, other / "scan.abc.png")
            assert not src.exists() and (other / "scan.abc.png").read_bytes() == data
            folder = tmp_path / "odd.png"
            folder.mkdir()
            (folder / "inner.txt").write_text("x")
            _move(folder, other / "odd.abc.png")
            assert not folder.exists() and (other / "odd.abc.png" / "inner.txt").read_text() == "x"
            assert [p.name for p in other.iterdir() if p.name.startswith(".")] == []
        finally:
            shutil.rmtree(other)

    def test_delete_instead_of_archive(self, tmp_path, rng):
        """on_success: delete removes classified inputs; bad ones still go to failed/."""
        st = Stage(tmp_path, delete=True)
        st.drop("k.png", png(rng))
        st.drop("bad.jpg", b"")
        st.commit.commit(st.batch("k.png", "bad.jpg"))
        assert os.listdir(st.folders.input) == [] and os.listdir(st.folders.archive) == []
        assert len(verdicts(st.folders.output)) == 1 and len(os.listdir(st.folders.failed)) == 2
        assert verdicts(st.folders.output)[0]["archived_as"] == ""
        st.close()
