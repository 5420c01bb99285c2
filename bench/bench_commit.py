"""The commit stage alone: judged batches of real scans made durable one batch at a time, or as groups.

Classifies N real scans in batches of `watch.batch_size` first (not timed), then times the commit
stage (verdict files, ledger, verdicts.csv, archive moves, with their fsyncs) committing them one
batch at a time and in groups of --group batches, as the service does when batches wait for it
(group commit). The two alternate --runs times, each in a fresh folder beside the data's file
system's temporary folder; the figures are min-median-max of scans per second and of the stage's
CPU milliseconds per scan. Depends on the disk's fsync latency: compare figures from one sitting.

    python bench/bench_commit.py [--model PATH] [--data DIR] [--scans 1024] [--group 8] [--runs 3]
"""
from __future__ import annotations

import argparse
import os
import queue
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tumord.config import DEFAULTS  # noqa: E402
from tumord.data.images import IMAGE_SUFFIXES  # noqa: E402
from tumord.logs import get_logger, setup_logging  # noqa: E402
from tumord.model import checkpoint  # noqa: E402
from tumord.model.registry import current_model_path  # noqa: E402
from tumord.service.classify import Classify, Limits  # noqa: E402
from tumord.service.commit import Commit  # noqa: E402
from tumord.service.ledger import Ledger  # noqa: E402
from tumord.service.records import Counters, Folders, Inflight, Ready  # noqa: E402
from tumord.service.swap import ModelSlot  # noqa: E402
from tumord.service.verdicts import VerdictCsv  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from common import add_model_and_data_options, spread  # noqa: E402


def one_run(model, files: list[Path], group: int) -> tuple[float, float]:
    """(scans per second, CPU ms per scan) of committing `files`, judged, `group` batches at a time."""
    work = Path(tempfile.mkdtemp(prefix="tumord-bench-commit-"))
    try:
        out = work / "out"
        folders = Folders(work / "in", out, out / "archive", out / "failed", False)
        for p in (folders.input, folders.archive, folders.failed):
            p.mkdir(parents=True)
        for i, p in enumerate(files):
            shutil.copyfile(p, folders.input / f"c{i:05d}{p.suffix.lower()}")
        ledger = Ledger(out / "ledger.sqlite3")
        csv = VerdictCsv(out / "verdicts.csv", model.class_names)
        commit = Commit(batches=queue.Queue(), ledger=ledger, csv=csv, folders=folders, inflight=Inflight(),
                        counters=Counters(), log=get_logger())
        commit.recover()
        csv.open()
        size = DEFAULTS["watch"]["batch_size"]
        classify = Classify(root=folders.input, ready=queue.Queue(), out=queue.Queue(), slot=ModelSlot(model),
                            ledger=ledger, limits=Limits(10**8, 10**9, stable_seconds=0), batch_size=size, threads=2,
                            inflight=Inflight(), retry=lambda p, why=None: None, log=get_logger())
        names = sorted(os.listdir(folders.input))
        batches = [classify.classify([Ready(str(folders.input / n), "2026-01-01T00:00:00.000Z", time.monotonic())
                                      for n in names[i:i + size]]) for i in range(0, len(names), size)]
        classify.judge.close()
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(batches), group):
            commit.commit(*batches[i:i + group])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert len(os.listdir(folders.archive)) == len(names) and not os.listdir(folders.input)
        commit.io.shutdown()
        ledger.close()
        return len(names) / wall, cpu * 1000 / len(names)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_and_data_options(ap, REPO)
    ap.add_argument("--scans", type=int, default=1024)
    ap.add_argument("--group", type=int, default=8, help="batches per group in the grouped runs")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    setup_logging(level="error")  # a line per scan would time the terminal
    model = checkpoint.load(args.model or current_model_path(REPO / DEFAULTS["paths"]["models"]))
    files = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        sys.exit(f"bench_commit: no images under {args.data}")
    files = [files[i % len(files)] for i in range(args.scans)]
    got = {1: [], args.group: []}
    for _ in range(args.runs):
        for g in got:
            got[g].append(one_run(model, files, g))
    for g, runs in got.items():
        print(f"commit stage, {g} batch{'es' if g > 1 else ''} of {DEFAULTS['watch']['batch_size']} per group: "
              f"{spread([r[0] for r in runs], '{:.0f}')} scans/s, CPU {spread([r[1] for r in runs])} ms per scan "
              f"({args.runs} runs, min-median-max)")
    ratios = [b[0] / a[0] for a, b in zip(got[1], got[args.group])]
    print(f"grouped / one at a time: {spread(ratios)}")


if __name__ == "__main__":
    main()
