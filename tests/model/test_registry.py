"""The model registry: publishing, the pointer, promote/rollback, pruning, locks, cleaning up."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.support import ROOT, leftovers, tumord
from tumord.data.images import Preprocess
from tumord.model import checkpoint, registry
from tumord.nn.network import Network, mlp_spec


def make_version(models_dir, minute: int, seed: int | None = None) -> str:
    """A registered model created at 2030-01-01 00:<minute>, so versions sort in a known order."""
    net = Network((1, 8, 8), mlp_spec(hidden=4, classes=2), np.random.default_rng(minute if seed is None else seed))
    meta = checkpoint.new_metadata(net, ["normal", "tumor"], Preprocess(size=8))
    meta["created_at"] = f"2030-01-01T00:{minute:02d}:00Z"
    staging = registry.new_staging(models_dir)
    meta = checkpoint.save(staging / registry.MODEL_FILE, net, meta)
    (staging / registry.REPORT_FILE).write_text(json.dumps(
        {"model": {"version": meta["version"]}, "test": {"accuracy": 0.9, "sensitivity": 0.8, "n": 10},
         "gate": {"promote": True}}))
    registry.publish(models_dir, staging, meta["version"])
    return meta["version"]


class TestPublish:
    def test_publish_moves_a_whole_readable_folder_in_one_step(self, tmp_path):
        """The staging folder becomes versions/<version> with its files readable by the service user."""
        v = make_version(tmp_path, 1)
        folder = registry.versions_dir(tmp_path) / v
        assert sorted(p.name for p in folder.iterdir()) == ["model.npz", "report.json"]
        assert oct((folder / "model.npz").stat().st_mode & 0o777) == "0o644"
        assert oct(folder.stat().st_mode & 0o777) == "0o755"
        assert leftovers(tmp_path) == []

    def test_publishing_the_same_model_twice_keeps_one_copy(self, tmp_path):
        """A version name holds the weights' hash, so a second publish of it just drops the staging."""
        v = make_version(tmp_path, 1)
        again = registry.new_staging(tmp_path)
        (again / registry.MODEL_FILE).write_bytes((registry.versions_dir(tmp_path) / v / "model.npz").read_bytes())
        registry.publish(tmp_path, again, v)
        assert registry.version_names(tmp_path) == [v] and not again.exists()

    def test_add_model_registers_an_existing_file(self, tmp_path):
        """add_model copies a model file in as a version named by its metadata."""
        from tests.synthetic import tiny_model

        meta = tiny_model(tmp_path / "m.npz")
        assert registry.add_model(tmp_path / "models", tmp_path / "m.npz") == meta["version"]
        assert registry.version_names(tmp_path / "models") == [meta["version"]]


class TestPointer:
    def test_promote_switches_and_remembers_the_previous(self, tmp_path):
        """promote returns the replaced version and puts it first in the history."""
        a, b = make_version(tmp_path, 1), make_version(tmp_path, 2)
        assert registry.promote(tmp_path, a) is None
        assert registry.promote(tmp_path, b) == a
        assert registry.read_pointer(tmp_path) == {"current": b, "history": [a]}
        assert registry.current_model_path(tmp_path) == tmp_path / "versions" / b / "model.npz"
        assert oct((tmp_path / "current.json").stat().st_mode & 0o777) == "0o644"

    def test_promote_refuses_a_corrupt_version(self, tmp_path):
        """A version whose weights fail their SHA-256 check never becomes current."""
        a, b = make_version(tmp_path, 1), make_version(tmp_path, 2)
        registry.promote(tmp_path, a)
        model = registry.versions_dir(tmp_path) / b / "model.npz"
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0xFF
        model.write_bytes(bytes(data))
        with pytest.raises(checkpoint.CheckpointError):
            registry.promote(tmp_path, b)
        assert registry.current_version(tmp_path) == a

    def test_promote_refuses_a_copied_version_folder(self, tmp_path):
        """Issue 12 item 8: a version folder copied with `cp -a` under another name holds a model of
        the original version; `tumord models promote` refuses it (exit 2, naming both versions), so
        `models list`, the service and the verdicts keep agreeing on the current model."""
        a, b = make_version(tmp_path / "models", 1), make_version(tmp_path / "models", 2)
        registry.promote(tmp_path / "models", a)
        copy = "20300101T000300Z-deadbeef"
        subprocess.run(["cp", "-a", str(registry.versions_dir(tmp_path / "models") / b),
                        str(registry.versions_dir(tmp_path / "models") / copy)], check=True)
        run = tumord("models", "promote", copy, cwd=tmp_path)
        assert run.returncode == 2 and copy in run.stderr and b in run.stderr, run.stderr
        assert registry.current_version(tmp_path / "models") == a
        listed = {r["version"]: r for r in json.loads(tumord("models", "list", "--json", cwd=tmp_path).stdout)}
        assert listed[a]["current"] and b in listed[copy]["error"]
        assert tumord("models", "promote", b, cwd=tmp_path).returncode == 0  # the original itself is fine

    def test_promote_does_not_override_a_pointer_moved_meanwhile(self, tmp_path):
        """With expect_current, a pointer someone else changed raises CurrentChanged and stays."""
        a, b, c = (make_version(tmp_path, m) for m in (1, 2, 3))
        registry.promote(tmp_path, b)
        with pytest.raises(registry.CurrentChanged):
            registry.promote(tmp_path, c, expect_current=a)
        assert registry.current_version(tmp_path) == b

    def test_rollback_walks_back_through_the_history(self, tmp_path):
        """Each rollback returns to the one before; the version left is not rolled back to again."""
        a, b, c = (make_version(tmp_path, m) for m in (1, 2, 3))
        for v in (a, b, c):
            registry.promote(tmp_path, v)
        assert registry.rollback(tmp_path) == (c, b)
        assert registry.rollback(tmp_path) == (b, a)
        with pytest.raises(ValueError, match="no previous model"):
            registry.rollback(tmp_path)
        assert registry.current_version(tmp_path) == a

    def test_rollback_skips_versions_that_are_gone(self, tmp_path):
        """A history entry whose folder was removed by hand is passed over."""
        a, b, c = (make_version(tmp_path, m) for m in (1, 2, 3))
        for v in (a, b, c):
            registry.promote(tmp_path, v)
        import shutil

        shutil.rmtree(registry.versions_dir(tmp_path) / b)
        assert registry.rollback(tmp_path) == (c, a)

    def test_resolve_accepts_a_unique_prefix(self, tmp_path):
        """Versions can be named by a prefix that matches exactly one of them."""
        a, b = make_version(tmp_path, 1), make_version(tmp_path, 12)
        assert registry.resolve(tmp_path, "20300101T0001") == a
        assert registry.resolve(tmp_path, b) == b
        with pytest.raises(ValueError, match="matches 2 versions"):
            registry.resolve(tmp_path, "2030")
        with pytest.raises(ValueError, match="no version"):
            registry.resolve(tmp_path, "1999")


class TestPrune:
    def test_prune_keeps_the_newest_and_always_current_and_previous(self, tmp_path):
        """keep=2 leaves the two newest plus the old current and its predecessor."""
        vs = [make_version(tmp_path, m) for m in range(1, 7)]
        registry.promote(tmp_path, vs[0])
        registry.promote(tmp_path, vs[1])
        registry.promote(tmp_path, vs[2])
        registry.rollback(tmp_path)  # current vs[1], previous vs[0]
        removed = registry.prune(tmp_path, keep=2)
        assert removed == [vs[2], vs[3]]
        assert registry.version_names(tmp_path) == [vs[0], vs[1], vs[4], vs[5]]
        assert registry.read_pointer(tmp_path) == {"current": vs[1], "history": [vs[0]]}
        assert leftovers(tmp_path) == []

    def test_prune_forgets_deleted_versions_in_the_history(self, tmp_path):
        """Pruned versions leave the history, so rollback never aims at one."""
        vs = [make_version(tmp_path, m) for m in range(1, 5)]
        for v in vs:
            registry.promote(tmp_path, v)
        assert registry.prune(tmp_path, keep=0) == [vs[0], vs[1]]
        assert registry.read_pointer(tmp_path)["history"] == [vs[2]]

    def test_prune_rejects_a_negative_count(self, tmp_path):
        """registry.keep below 0 is a clear error."""
        with pytest.raises(ValueError, match="registry.keep"):
            registry.prune(tmp_path, keep=-1)


class TestDescribe:
    def test_describe_lists_metrics_and_marks_current_and_previous(self, tmp_path):
        """One row per version with creation time, test metrics and gate outcome."""
        a, b, c = (make_version(tmp_path, m) for m in (1, 2, 3))
        registry.promote(tmp_path, a)
        registry.promote(tmp_path, b)
        rows = {r["version"]: r for r in registry.describe(tmp_path)}
        assert rows[b]["current"] and rows[a]["previous"] and not (rows[c]["current"] or rows[c]["previous"])
        assert rows[a]["created_at"] == "2030-01-01T00:01:00Z"
        assert rows[a]["test"]["accuracy"] == 0.9 and rows[a]["gate"] == "passed"

    def test_describe_reports_an_unreadable_version_instead_of_failing(self, tmp_path):
        """A damaged or truncated model file shows up as an error row; the others still list."""
        a, b, c = (make_version(tmp_path, m) for m in (1, 2, 3))
        (registry.versions_dir(tmp_path) / a / "model.npz").write_bytes(b"junk")
        model = registry.versions_dir(tmp_path) / b / "model.npz"
        model.write_bytes(model.read_bytes()[:200])
        rows = registry.describe(tmp_path)
        assert "error" in rows[0] and "error" in rows[1] and rows[2]["version"] == c

    def test_a_hand_broken_pointer_is_a_clear_error(self, tmp_path):
        """A current.json that is not the pointer format names the file."""
        (tmp_path / "current.json").write_text("[1, 2]")
        with pytest.raises(checkpoint.CheckpointError, match="current.json: not a valid model pointer"):
            registry.read_pointer(tmp_path)


class TestLocks:
    def test_second_holder_gets_lock_held_naming_the_first(self, tmp_path):
        """While one holds the training lock, another attempt fails at once with its pid."""
        lock = tmp_path / "models" / "train.lock"
        with registry.train_lock(lock):
            with pytest.raises(registry.LockHeld, match=f"pid {os.getpid()}"):
                with registry.train_lock(lock):
                    pass
        with registry.train_lock(lock):  # released on exit
            pass

    def test_a_killed_holder_releases_the_lock(self, tmp_path):
        """The kernel drops a flock when its process dies, even by SIGKILL."""
        lock = tmp_path / "train.lock"
        code = ("import sys, time; from tumord.model import registry\n"
                f"with registry.train_lock({str(lock)!r}):\n    print('held', flush=True); time.sleep(60)")
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                                 env=dict(os.environ, PYTHONPATH=str(ROOT)))
        try:
            assert child.stdout.readline().strip() == "held"
            with pytest.raises(registry.LockHeld):
                with registry.train_lock(lock):
                    pass
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        deadline = time.monotonic() + 5
        with registry.train_lock(lock):
            assert time.monotonic() < deadline

    def test_clean_stale_removes_work_folders_only(self, tmp_path):
        """Leftover staging, trash and pointer temp files go; versions and the pointer stay."""
        a = make_version(tmp_path, 1)
        registry.promote(tmp_path, a)
        (registry.new_staging(tmp_path) / "model.npz").write_bytes(b"half")
        (tmp_path / ".trash-x" / "old").mkdir(parents=True)
        (tmp_path / ".current.json.abc.tmp").write_text("{")
        assert len(registry.clean_stale(tmp_path)) == 3
        assert leftovers(tmp_path) == [] and registry.current_version(tmp_path) == a
