"""Committing by atomic create: two real processes racing for the same scans create each record once."""
from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from tumord.batch import store


def _attempt(folder: str, start, scans: int) -> list[bool]:
    """One attempt at committing the same scans, as a re-executed task would."""
    start.wait()
    created = []
    for i in range(scans):
        made, _, _ = store.commit(Path(folder), f"scan {i}.abc", f"scan {i}.png", error=False,
                                  make=lambda name: {"file": f"scan {i}.png", "verdict": f"{name}.json",
                                                     "attempt": multiprocessing.current_process().name})
        created.append(made)
    return created


def test_two_processes_racing_for_the_same_scans_create_each_verdict_exactly_once(tmp_path):
    store.prepare(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(2) as pool:
        start = manager.Barrier(2)
        first, second = pool.starmap(_attempt, [(str(tmp_path), start, 200)] * 2)
    assert [a + b for a, b in zip(first, second)] == [1] * 200
    files = sorted(tmp_path.glob("*.json"))
    assert [p.name for p in files] == sorted(f"scan {i}.abc.json" for i in range(200))
    assert not store.sweep(tmp_path)  # no temporary file left behind


def test_a_name_held_by_another_files_record_moves_on_and_nothing_is_replaced(tmp_path):
    store.prepare(tmp_path)
    make = lambda file: lambda name: {"file": file, "verdict": f"{name}.json"}  # noqa: E731
    assert store.commit(tmp_path, "scan.abc", "a/scan.png", make("a/scan.png"), error=False)[:2] == (True, "scan.abc")
    before = (tmp_path / "scan.abc.json").read_bytes()
    # the same stem and bytes at another path: its own name, -2
    assert store.commit(tmp_path, "scan.abc", "b/scan.png", make("b/scan.png"), error=True)[:2] == (True, "scan.abc-2")
    assert (tmp_path / "failed" / "scan.abc-2.error.json").exists()
    # a second attempt at the first scan finds its record and leaves the bytes alone
    created, name, record = store.commit(tmp_path, "scan.abc", "a/scan.png", make("a/scan.png"), error=False)
    assert (created, name, record["file"]) == (False, "scan.abc", "a/scan.png")
    assert (tmp_path / "scan.abc.json").read_bytes() == before
    assert store.find(tmp_path, "scan.abc", "b/scan.png")[0] == "scan.abc-2"
    assert store.find(tmp_path, "scan.abc", "c/scan.png") is None
    assert json.loads(before)["verdict"] == "scan.abc.json"
