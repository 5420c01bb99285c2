"""kill -9 during training or promotion leaves the registry consistent; the next run cleans up.

Real `tumord train` processes are killed with SIGKILL: at random moments, at a chosen epoch
(read from the progress events), and at each rename of a promotion (tests/model/crashpoint).
After every kill: each visible version loads whole, current.json names a version that loads,
and nothing half-written is visible; the leftovers are hidden work files the next run removes.
"""
import json
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.support import ROOT, check_registry, child_env, leftovers, register_tiny, workdir
from tumord.model import registry

KEEP_NONE = {"registry": {"keep": 0, "gate": {"min_images": 10}}}  # every run prunes: its steps get killed too
LONG = ("--set", "train.epochs=400", "--set", "train.patience=400")  # about a second of training


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Scans, and a registry holding two untrained models (current and previous) to be replaced."""
    root = workdir(tmp_path_factory.mktemp("crash"), extra=KEEP_NONE)
    tmp = tmp_path_factory.mktemp("tiny")
    old = [register_tiny(root / "models", tmp, seed=s) for s in (1, 2)]
    return root, old


@pytest.fixture
def work(base, tmp_path):
    root, old = base
    copy = tmp_path / "w"
    shutil.copytree(root, copy)
    (copy / "config.yaml").write_text((copy / "config.yaml").read_text().replace(str(root), str(copy)))
    return copy, old


def train_cmd(root, *extra):
    return [sys.executable, "-m", "tumord.cli", "train", "--data", str(root / "data"),
            "--config", str(root / "config.yaml"), *extra]


def crashpoint(root, n, when):
    args = [sys.executable, "-m", "tests.model.crashpoint", str(root / "models"), str(n), when, "--",
            "train", "--data", str(root / "data"), "--config", str(root / "config.yaml")]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60, env=child_env())


def finish(root) -> str:
    """A normal run after the crash: it must clean up, and the registry must end consistent."""
    done = subprocess.run(train_cmd(root), capture_output=True, text=True, timeout=60, env=child_env())
    assert done.returncode in (0, 3), done.stderr[-2000:]
    assert leftovers(root / "models") == []
    return check_registry(root / "models")["current"]


def test_the_promotion_steps_are_the_expected_renames(work):
    """A full run renames into models/ four times: publish, switch, prune's history, prune's trash."""
    root, old = work
    run = crashpoint(root, 0, "list")
    assert run.returncode == 0, run.stderr[-2000:]
    steps = [line.split()[2] for line in run.stderr.splitlines() if line.startswith("crashpoint ")]
    assert [s.split("/")[0] for s in steps[:3]] == ["versions", "current.json", "current.json"]
    assert len(steps) == 4 and steps[3].startswith(".trash-") and steps[3].endswith(old[0])


@pytest.mark.parametrize("n,when,promoted", [
    (1, "before", False),  # staged, not yet published
    (1, "after", False),  # published, pointer not switched
    (2, "before", False),  # new pointer written to its temp file, not renamed
    (2, "after", True),  # switched, old versions not yet pruned
    (3, "before", True),  # pruning decided, shorter history in the pointer's temp file
    (3, "after", True),  # history rewritten, old version still in place
    (4, "before", True),  # about to move the old version out of sight
    (4, "after", True),  # the old version moved to trash, not yet deleted
])
def test_kill_at_each_promotion_step_leaves_a_consistent_registry(work, n, when, promoted):
    """SIGKILL at each rename of a promotion: the old or the new model is current, never a broken one."""
    root, old = work
    run = crashpoint(root, n, when)
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    pointer = check_registry(root / "models")
    assert (pointer["current"] != old[1]) == promoted
    assert pointer["current"] not in old[:1]
    finish(root)


def test_kill_mid_training_at_a_chosen_epoch(work):
    """Killed while training: nothing is published, the old model stays, the next run cleans up."""
    root, old = work
    proc = subprocess.Popen(train_cmd(root, *LONG), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env=child_env())
    try:
        for line in proc.stderr:
            if line.startswith("{") and json.loads(line).get("epoch") == 50:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    check_registry(root / "models", expect_current=old[1])
    assert registry.version_names(root / "models") == sorted(old)
    assert [name.split("-")[0] for name in leftovers(root / "models")] == [".staging"]
    assert finish(root) not in old


def test_kill_at_random_moments_in_a_loop(work):
    """Eight runs killed at random times, each followed by the invariant check, then one clean run."""
    root, old = work
    rng = random.Random(4)
    t0 = time.monotonic()
    full = subprocess.run(train_cmd(root, *LONG), capture_output=True, text=True, timeout=60, env=child_env())
    span = time.monotonic() - t0
    assert full.returncode == 0, full.stderr[-2000:]
    staged = 0
    for _ in range(8):
        before = set(leftovers(root / "models"))
        proc = subprocess.Popen(train_cmd(root, *LONG), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=child_env())
        time.sleep(rng.uniform(0.2, span))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        check_registry(root / "models")
        staged += any(name.startswith(".staging-") for name in set(leftovers(root / "models")) - before)
    print(f"{staged} of 8 kills landed while a candidate was being trained or judged")
    assert staged >= 1
    finish(root)
