"""Acceptance: the running service follows promotions and rollbacks without a restart.

Real processes throughout: `tumord watch` (readiness read from its notify socket, as systemd
would), `tumord train` and `tumord models rollback` run beside it while scans keep arriving.
"""
import threading
import time

import numpy as np
import pytest

from tests.support import (
    UNTRAINED, Watch, check_registry, drop_scan, register_tiny, tumord, verdicts, wait_for_verdicts, workdir,
)
from tumord.model import registry


class Dropper(threading.Thread):
    """Drops a labelled scan into input/ every 50 ms until stopped; remembers each name and label."""

    def __init__(self, input_dir, seed: int, prefix: str):
        super().__init__(daemon=True)
        self.input_dir, self.rng, self.prefix = input_dir, np.random.default_rng(seed), prefix
        self.labels: dict[str, str] = {}
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            name = f"{self.prefix}{len(self.labels):04d}.png"
            tumor = bool(self.rng.integers(2))
            drop_scan(self.input_dir, name, tumor, self.rng)
            self.labels[name] = "tumor" if tumor else "normal"
            self.halt.wait(0.05)

    def stop(self):
        self.halt.set()
        self.join()


def drop_until(root, watch, seed, prefix, until, extra=0.5, timeout=30):
    """Keeps scans arriving until `until(verdicts)` holds, then `extra` seconds more; returns the labels."""
    dropper = Dropper(root / "input", seed, prefix)
    dropper.start()
    deadline = time.monotonic() + timeout
    try:
        while not until(verdicts(root / "output")):
            assert watch.proc.poll() is None, watch.output()
            assert time.monotonic() < deadline, watch.output()
            time.sleep(0.05)
        time.sleep(extra)
    finally:
        dropper.stop()
    return dropper.labels


def models_in_order(found):
    """The sequence of model versions over the verdicts, with repeats collapsed."""
    seq = []
    for v in found:
        if not seq or seq[-1] != v["model"]["version"]:
            seq.append(v["model"]["version"])
    return seq


@pytest.fixture
def root(tmp_path):
    return workdir(tmp_path / "w")


def test_retrain_promotes_and_rollback_returns_while_serving(root, tmp_path):
    """Old model, then the promoted one, then the old one again: one process, every scan one verdict."""
    old = register_tiny(root / "models", tmp_path)
    old_sha = registry.describe(root / "models")[0]["sha256"]
    watch = Watch(root)
    try:
        watch.wait_ready()
        pid = watch.proc.pid
        assert old in watch.wait_status("model")

        # a retrain while scans keep arriving
        sent: dict[str, str] = {}
        dropper = Dropper(root / "input", 1, "a")
        dropper.start()
        try:
            trained = tumord("train", "--data", str(root / "data"), "--config", str(root / "config.yaml"), cwd=root)
        finally:
            dropper.stop()
        sent.update(dropper.labels)
        assert trained.returncode == 0, trained.stderr[-3000:]
        new = check_registry(root / "models")["current"]
        assert new != old
        sent.update(drop_until(root, watch, 2, "b", lambda found: any(v["model"]["version"] == new for v in found)))
        found = wait_for_verdicts(root / "output", len(sent), watch)
        assert models_in_order(found) == [old, new]
        assert {v["file"] for v in found} == set(sent) and len(found) == len(sent)
        assert found[0]["model"] == {"version": old, "sha256": old_sha}
        after = [v for v in found if v["model"]["version"] == new]
        accuracy = np.mean([v["label"] == sent[v["file"]] for v in after])
        assert accuracy >= 0.9, accuracy  # the promoted model is the better one
        watch.wait_status(f"model {new}")

        # roll back: the service returns to the old model the same way
        back = tumord("models", "rollback", "--config", str(root / "config.yaml"), cwd=root)
        assert back.returncode == 0, back.stderr
        check_registry(root / "models", expect_current=old)
        before = len(found)
        sent.update(drop_until(root, watch, 3, "c", lambda f: len(f) > before and f[-1]["model"]["version"] == old))
        found = wait_for_verdicts(root / "output", len(sent), watch)
        assert models_in_order(found) == [old, new, old]
        assert {v["file"] for v in found} == set(sent) and len(found) == len(sent)
        watch.wait_status(f"model {old}")
        assert watch.proc.pid == pid and watch.proc.poll() is None  # never restarted
        counts = {m: sum(v["model"]["version"] == m for v in found) for m in (old, new)}
        print(f"{len(found)} scans, one verdict each; by model: {counts}")
        assert sum(m.get("WATCHDOG") == "1" for m in watch.messages) >= 4  # healthy throughout
        assert sorted(p.name for p in (root / "input").iterdir()) == []
    finally:
        code = watch.stop()
    assert code == 0, watch.output()


def test_a_worse_candidate_is_not_promoted_and_the_service_keeps_its_model(root):
    """Training with learning rate 0 exits 3; the service goes on with the current model."""
    first = tumord("train", "--data", str(root / "data"), "--config", str(root / "config.yaml"), cwd=root)
    assert first.returncode == 0, first.stderr[-3000:]
    current = check_registry(root / "models")["current"]
    watch = Watch(root)
    try:
        watch.wait_ready()
        dropper = Dropper(root / "input", 4, "w")
        dropper.start()
        try:
            worse = tumord("train", "--data", str(root / "data"), "--config", str(root / "config.yaml"),
                           *UNTRAINED, cwd=root)
            time.sleep(1.0)  # five model polls after the run
        finally:
            dropper.stop()
        assert worse.returncode == 3, worse.stderr[-3000:]
        assert "kept:" in worse.stderr
        check_registry(root / "models", expect_current=current)
        assert len(registry.version_names(root / "models")) == 2  # the candidate is registered, not current
        found = wait_for_verdicts(root / "output", len(dropper.labels), watch)
        assert models_in_order(found) == [current] and len(found) == len(dropper.labels)
        assert f"model {current}" in watch.wait_status("model")
    finally:
        code = watch.stop()
    assert code == 0, watch.output()
