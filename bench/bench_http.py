"""What serving HTTP costs a burst: the same 2,000-scan burst with the HTTP server on and off.

Runs `tumord watch` (default settings, a fresh folder each run) and drops a burst of real scans,
alternating runs with `http.enabled` true and false so that both see the same machine load. In
the runs with HTTP on, a client asks for /metrics, the web page (/ and its live part) and
/api/verdicts?limit=50 once a second, as a Prometheus scraper and an open page would, and times
each answer. Prints burst throughput per run (min-median-max per mode, and the ratio of the
medians) and the latency of /metrics and /api/verdicts under load (p50, p99).

    python bench/bench_http.py [--model PATH] [--data DIR] [--burst 2000] [--pairs 3] [--json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import REPO, Service, drop, scan_files  # noqa: E402
from common import blas_report  # noqa: E402

from tumord.config import DEFAULTS  # noqa: E402
from tumord.model.registry import current_model_path  # noqa: E402

POLLED = {"metrics": "metrics", "page": "", "page_live": "?live=1", "verdicts": "api/verdicts?limit=50"}


class Poller(threading.Thread):
    """Every second: each of POLLED once; the seconds each answer took, per endpoint."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.stopping = url, threading.Event()
        self.seconds: dict[str, list[float]] = {k: [] for k in POLLED}
        self.errors = 0

    def run(self) -> None:
        while not self.stopping.wait(1.0):
            for key, path in POLLED.items():
                started = time.perf_counter()
                try:
                    with urllib.request.urlopen(self.url + path, timeout=10) as r:
                        r.read()
                    self.seconds[key].append(time.perf_counter() - started)
                except OSError:
                    self.errors += 1


def burst(model: Path, files: list[Path], http: bool, blas: int, predict: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="tumord-bench-http-"))
    try:
        staging = work / "staging"
        staging.mkdir()
        extra = ("--set", "http.enabled=true", "--set", "http.port=0") if http else ()
        svc = Service(work, model, blas, predict, extra)
        poller = Poller(svc.url) if http else None
        if poller:
            poller.start()
            time.sleep(1.5)  # the first polls happen before the burst too
        batch = [(f"burst-{i:05d}{p.suffix.lower()}", p) for i, p in enumerate(files)]
        completed = drop(svc, staging, batch)
        names = [n for n, _ in batch]
        svc.wait(names, 900)
        span = max(svc.done[n] for n in names) - min(completed.values())
        out = {"http": http, "scans_per_s": round(len(names) / span, 1)}
        if poller:
            poller.stopping.set()
            poller.join()
            out["polls"] = {k: v for k, v in poller.seconds.items()}
            out["poll_errors"] = poller.errors
        out["exit_code"] = svc.stop()
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def spread(values: list[float]) -> str:
    return f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="model file (default: the current model in models/)")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets" / "brain-tumor")
    ap.add_argument("--burst", type=int, default=2000)
    ap.add_argument("--pairs", type=int, default=3, help="runs with HTTP off and on, alternated")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    model = args.model or current_model_path(REPO / DEFAULTS["paths"]["models"])
    files = scan_files(args.data, args.burst)
    w = DEFAULTS["watch"]
    runs = []
    for i in range(args.pairs):
        for http in ((False, True) if i % 2 == 0 else (True, False)):
            runs.append(burst(model, files, http, w["blas_threads"], w["predict_threads"]))
            print(f"run {len(runs)}: http {'on ' if http else 'off'} {runs[-1]['scans_per_s']} scans/s",
                  file=sys.stderr)
    on = [r["scans_per_s"] for r in runs if r["http"]]
    off = [r["scans_per_s"] for r in runs if not r["http"]]
    polls: dict[str, list[float]] = {k: [] for k in POLLED}
    for r in runs:
        for k, v in r.get("polls", {}).items():
            polls[k] += v
    latency = {k: {"p50_ms": round(float(np.percentile(v, 50)) * 1000, 1),
                   "p99_ms": round(float(np.percentile(v, 99)) * 1000, 1), "n": len(v)} for k, v in polls.items() if v}
    result = {"burst": args.burst, "blas": blas_report(), "runs": [{k: r[k] for k in ("http", "scans_per_s")}
                                                                     for r in runs],
              "off_min_median_max": spread(off), "on_min_median_max": spread(on),
              "slower_percent": round(100 * (1 - statistics.median(on) / statistics.median(off)), 1),
              "latency_under_load": latency, "poll_errors": sum(r.get("poll_errors", 0) for r in runs)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"burst of {args.burst} scans, {args.pairs} pairs alternated; {result['blas']}")
    print(f"HTTP off: {result['off_min_median_max']} scans/s (min / median / max)")
    print(f"HTTP on:  {result['on_min_median_max']} scans/s; median {result['slower_percent']}% slower")
    for k, v in latency.items():
        print(f"  {k:10s} p50 {v['p50_ms']} ms, p99 {v['p99_ms']} ms ({v['n']} requests)")
    print(f"poll errors: {result['poll_errors']}")


if __name__ == "__main__":
    main()
