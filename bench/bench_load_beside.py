"""The burst's ceiling alone, beside a Python load in a thread of its process, and beside the same
load in a process of its own: what sharing the GIL with the service's bookkeeping costs the judge.

The ceiling is bench_service.py's (the judge's work on real scans, batches of `watch.batch_size`,
the service's thread settings). The load stands for the commit stage: every 10 ms, --busy-ms of
CPU spent on what the commit does per scan (JSON encoding, building dicts, stat calls); 1.2 ms
every 10 ms is 12% of a core, about the commit's CPU at the ceiling's pace. The three run
--rounds times, alternating; printed as min-median-max, and each with the load as a share of the
ceiling alone (medians).

    python bench/bench_load_beside.py [--model PATH] [--data DIR] [--scans 2000] [--rounds 4] [--busy-ms 1.2]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

PERIOD_SECONDS = 0.010


def load(stop, busy_seconds: float) -> None:
    """busy_seconds of commit-like Python work every PERIOD_SECONDS until `stop` is set."""
    record = {"file": "scan.png", "sha256": "ab" * 32, "probabilities": {"tumor": 0.9, "normal": 0.1},
              "model": {"version": "20261203T101125Z", "sha256": "cd" * 32}}
    n, due = 0, time.monotonic()
    while not stop.is_set():
        started = time.thread_time()
        while time.thread_time() - started < busy_seconds:
            verdict = {**record, "n": n, "confidence": round(0.123456789 * n % 1, 6)}
            json.dumps(verdict)
            os.stat(REPO)
            n += 1
        due += PERIOD_SECONDS
        time.sleep(max(0.0, due - time.monotonic()))


def main() -> None:
    from bench_service import judge_only, scan_files
    from common import add_model_and_data_options, blas_report, spread
    from tumord.config import DEFAULTS
    from tumord.model import checkpoint
    from tumord.model.registry import current_model_path
    from tumord.service.service import limit_blas_threads

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_and_data_options(ap, REPO)
    ap.add_argument("--scans", type=int, default=2000, help="scans the ceiling judges each time")
    ap.add_argument("--rounds", type=int, default=4, help="rounds of the three, alternating")
    ap.add_argument("--busy-ms", type=float, default=1.2, help="the load's CPU per 10 ms")
    args = ap.parse_args()
    if not args.data.is_dir():
        sys.exit(f"bench_load_beside: no data at {args.data} (pass --data DIR)")
    watch = DEFAULTS["watch"]
    model = checkpoint.load(args.model or current_model_path(REPO / DEFAULTS["paths"]["models"]))
    files = scan_files(args.data, args.scans)
    limit_blas_threads(watch["blas_threads"])
    spawn = multiprocessing.get_context("spawn")  # no fork of a process with threads
    rates: dict[str, list[float]] = {"alone": [], "beside a thread": [], "beside a process": []}
    for _ in range(args.rounds):
        for how in rates:
            stop, worker = None, None
            if how == "beside a thread":
                stop = threading.Event()
                worker = threading.Thread(target=load, args=(stop, args.busy_ms / 1000))
            elif how == "beside a process":
                stop = spawn.Event()
                worker = spawn.Process(target=load, args=(stop, args.busy_ms / 1000))
            if worker is not None:
                worker.start()
                time.sleep(1.0)  # a spawned interpreter takes a while to start
            rate = judge_only(model, files, watch["decode_threads"], watch["batch_size"],
                              watch["predict_threads"])["scans_per_s"]
            if worker is not None:
                stop.set()
                worker.join()
            rates[how].append(rate)
    alone = statistics.median(rates["alone"])
    print(f"BLAS: {blas_report()}")
    print(f"ceiling, scans/s, min-median-max of {args.rounds} rounds; load {args.busy_ms} ms of CPU every 10 ms:")
    for how, values in rates.items():
        print(f"  {how:17s} {spread(values, '{:.0f}')}  ({statistics.median(values) / alone:.3f} of alone)")


if __name__ == "__main__":
    main()
