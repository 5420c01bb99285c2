"""watchdog's own CPU per moved-in file, by the size of the burst.

Renames N empty files at once into a folder watched as `tumord watch` watches its input
(inotify with full events, the service's event filter) and waits until the handler has seen
every move; prints the CPU time of watchdog's threads (Linux /proc schedstat) per event. Each size runs
--runs times, the sizes alternating, as min-median-max. The service's threads are not involved:
this is the watcher's share of a burst, and whether it grows with the burst's size.

    python bench/bench_watchdog.py [--sizes 200 1000 2000 4000] [--runs 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from watchdog.events import FileSystemEventHandler  # noqa: E402

from common import spread  # noqa: E402
from tumord.service.intake import EVENT_FILTER  # noqa: E402
from tumord.service.service import native_observer  # noqa: E402


def threads_cpu_seconds(skip: set[int]) -> float:
    """CPU time of this process's threads except `skip` (native ids), from schedstat: nanoseconds,
    where /proc's stat counts 10 ms ticks (a small burst costs one or two of them)."""
    total = 0
    for tid in os.listdir("/proc/self/task"):
        if int(tid) in skip:
            continue
        try:
            total += int(Path(f"/proc/self/task/{tid}/schedstat").read_text().split()[0])
        except OSError:  # the thread ended meanwhile
            continue
    return total / 1e9


class Counter(FileSystemEventHandler):
    def __init__(self, want: int):
        self.seen, self.want, self.all_seen = 0, want, threading.Event()

    def on_moved(self, event) -> None:
        self.seen += 1
        if self.seen >= self.want:
            self.all_seen.set()


def one_burst(n: int) -> float:
    """Microseconds of watchdog's CPU per moved-in file, for n files renamed in at once."""
    root = Path(tempfile.mkdtemp(prefix="tumord-bench-watchdog-"))
    try:
        outside, watched = root / "staging", root / "input"
        outside.mkdir()
        watched.mkdir()
        names = [f"scan-{i:05d}.png" for i in range(n)]
        for name in names:
            (outside / name).touch()
        handler = Counter(n)
        observer = native_observer()
        observer.schedule(handler, str(watched), event_filter=EVENT_FILTER)
        observer.start()
        try:
            time.sleep(0.3)  # its threads started and idle
            before = threads_cpu_seconds({threading.get_native_id()})
            for name in names:
                os.rename(outside / name, watched / name)
            if not handler.all_seen.wait(120):
                sys.exit(f"bench_watchdog: {handler.seen} of {n} moves seen after 120 s")
            spent = threads_cpu_seconds({threading.get_native_id()}) - before
        finally:
            observer.stop()
            observer.join()
        return spent / n * 1e6
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 1000, 2000, 4000], help="files per burst")
    ap.add_argument("--runs", type=int, default=3, help="bursts of each size, the sizes alternating")
    args = ap.parse_args()
    results: dict[int, list[float]] = {n: [] for n in args.sizes}
    for _ in range(args.runs):
        for n in args.sizes:
            results[n].append(one_burst(n))
    print(f"watchdog's threads, CPU per moved-in file (us), min-median-max of {args.runs} runs:")
    for n, values in results.items():
        print(f"  burst of {n:5d}: {spread(values, '{:.0f}')}")


if __name__ == "__main__":
    main()
