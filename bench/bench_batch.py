"""`tumord batch` on real scans, against the service's burst and the in-process ceiling, in one run.

Each round measures, in an order that rotates from round to round (the machine may be shared, so
figures are given as min / median / max over the rounds):
  - ceiling: the judge's own work (read, hash, decode, input checks, batched prediction, feature
    distance) in this process, with the service's threads (bench_service.judge_only);
  - burst:   `tumord watch` given all scans at once (bench_service.Service), first to last verdict;
  - batch1 / batch2: `tumord batch` on a LocalCluster of 1 and 2 worker processes (one thread each),
    timed from submitting the chunks to the last row of the table (cluster start-up is reported apart).
Then, once, with 1 worker (so that Dask's overhead is not hidden by a second worker running):
  - chunk sizes 50, 200 and 1,000: wall time against the time spent inside tasks, which gives the
    overhead outside each task; a least-squares fit of wall = scans * a + tasks * b gives the fixed
    cost b of a task inside and outside it;
  - a re-run on a finished output (resume: every scan read and hashed, nothing decoded);
  - the scheduler's own per-task cost: 5,000 no-op tasks on 2 workers.

First, the CPU cost per scan of the task's code alone (no Dask): read and decode, predict, commit.

    python bench/bench_batch.py [--model PATH] [--data DIR] [--scans 2000] [--rounds 3] [--task-only] [--json]
"""
from __future__ import annotations

import argparse
import json
import operator
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from bench_service import Service, drop, judge_only, scan_files  # noqa: E402
from common import add_model_and_data_options, blas_report  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

from tumord.batch.run import Settings, run as run_batch  # noqa: E402
from tumord.config import DEFAULTS  # noqa: E402
from tumord.model import checkpoint  # noqa: E402
from tumord.model.registry import current_model_path  # noqa: E402
from tumord.service.service import limit_blas_threads  # noqa: E402

WATCH = DEFAULTS["watch"]


class Quiet:
    """A logger that drops everything: the benchmark prints its own figures."""

    def __getattr__(self, name):
        return lambda *a, **k: None


def manifest(work: Path, files: list[Path]) -> Path:
    path = work / "manifest.txt"
    path.write_text("".join(f"{p.absolute()}\n" for p in files))
    return path


def cluster(workers: int) -> tuple[LocalCluster, Client, float]:
    t = time.perf_counter()
    saved = dict(os.environ)
    c = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = Client(c)
    # the nanny exported OPENBLAS_NUM_THREADS=1 etc. here for its workers; the service under test must not inherit it
    os.environ.clear()
    os.environ.update(saved)
    return c, client, time.perf_counter() - t


def workers_cpu(client) -> float:
    return sum(client.run(time.process_time).values())


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of another process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batch_rate(client, model_path: Path, data: Path, work: Path, chunk: int) -> dict:
    out = Path(tempfile.mkdtemp(prefix="out-", dir=work))
    cpu, own = workers_cpu(client), time.process_time()
    s = run_batch(Settings(data=data, output=out, model=model_path, chunk_size=chunk), Quiet(), client=client)
    cpu, own = workers_cpu(client) - cpu, time.process_time() - own  # own: the client and the local scheduler
    assert s.judged == s.inputs and not s.chunk_errors, "batch did not judge every scan"
    return {"scans_per_s": s.judged / s.seconds, "seconds": s.seconds, "task_seconds": s.task_seconds,
            "tasks": s.chunks, "output": out, "worker_cpu_ms_per_scan": cpu / s.judged * 1000,
            "client_cpu_ms_per_scan": own / s.judged * 1000}


def burst_rate(model_path: Path, files: list[Path], work: Path) -> tuple[float, float]:
    w = Path(tempfile.mkdtemp(prefix="watch-", dir=work))
    staging = w / "staging"
    staging.mkdir()
    svc = Service(w, model_path, WATCH["blas_threads"], WATCH["predict_threads"])
    try:
        batch = [(f"burst-{i:05d}{p.suffix.lower()}", p) for i, p in enumerate(files)]
        cpu = proc_cpu(svc.proc.pid)
        completed = drop(svc, staging, batch)
        names = [n for n, _ in batch]
        svc.wait(names, 900)
        cpu = proc_cpu(svc.proc.pid) - cpu
        return len(names) / (max(svc.done[n] for n in names) - min(completed.values())), cpu / len(names) * 1000
    finally:
        svc.stop()
        shutil.rmtree(w, ignore_errors=True)


def task_cpu(model_path: Path, data: Path, work: Path, chunk: int = 200) -> dict:
    """CPU milliseconds per scan of batch's task code alone, in this process without Dask: reading
    and decoding, prediction, and committing (the rest of judge_chunk), one thread and one BLAS thread
    as on a worker. The per-core cost that the projection scales; Dask's costs are measured apart."""
    from threadpoolctl import threadpool_limits

    from tumord.batch import chunk as task, store
    from tumord.batch.inputs import collect

    model = checkpoint.load(model_path)

    class Worker:  # what get_worker() gives a task: the plugin with its loaded model
        plugins = {task.PLUGIN: type("Plugin", (), {"model": model})}

    task.get_worker = lambda: Worker
    items = collect(data).items[:chunk]
    out = Path(tempfile.mkdtemp(prefix="task-", dir=work))
    store.prepare(out)
    job = task.Job(str(out), None, WATCH["max_pixels"], WATCH["max_bytes"])
    with threadpool_limits(1, user_api="blas"):
        t = time.process_time()
        scans = [task._read(path, shown, job, out) for path, shown in items]
        read = time.process_time() - t
        images = np.stack([s.image for s in scans if s.image is not None])
        t = time.process_time()
        model.predict(images)
        predict = time.process_time() - t
        out = Path(tempfile.mkdtemp(prefix="task-", dir=work))
        store.prepare(out)
        t = time.process_time()
        task.judge_chunk(items, task.Job(str(out), None, WATCH["max_pixels"], WATCH["max_bytes"]))
        whole = time.process_time() - t
    n = len(items) / 1000
    return {"scans": len(items), "read_decode_ms": round(read / n, 2), "predict_ms": round(predict / n, 2),
            "commit_and_rest_ms": round((whole - read - predict) / n, 2), "whole_task_ms": round(whole / n, 2)}


def spread(values: list[float]) -> dict:
    return {"min": round(min(values), 2), "median": round(statistics.median(values), 2), "max": round(max(values), 2),
            "runs": [round(v, 2) for v in values]}


def run(args) -> dict:
    model_path = args.model or current_model_path(REPO / DEFAULTS["paths"]["models"])
    model = checkpoint.load(model_path)
    files = scan_files(args.data, args.scans)
    limit_blas_threads(WATCH["blas_threads"])  # as the service does, for the in-process ceiling
    work = Path(tempfile.mkdtemp(prefix="tumord-bench-batch-"))
    data = manifest(work, files)
    sizes = [p.stat().st_size for p in files]
    result = {"model": model.identity, "input_size": model.preprocess.size, "cores": os.cpu_count(),
              "scans": len(files), "mean_file_kib": round(float(np.mean(sizes)) / 1024, 1), "data": str(args.data),
              "blas_in_process": blas_report(), "load_average_at_start": os.getloadavg()}
    result["task_cpu_ms_per_scan"] = task_cpu(model_path, data, work)
    if args.task_only:
        shutil.rmtree(work, ignore_errors=True)
        return result
    clusters = {k: cluster(k) for k in (1, 2)}
    result["cluster_start_s"] = {k: round(v[2], 1) for k, v in clusters.items()}
    rates = {"ceiling": [], "burst": [], "batch1": [], "batch2": []}
    cpu = {k: [] for k in rates}  # CPU milliseconds per scan: what a shared machine does not distort

    def ceiling() -> tuple[float, float]:
        t = time.process_time()
        rate = judge_only(model, files, WATCH["decode_threads"], WATCH["batch_size"],
                          WATCH["predict_threads"])["scans_per_s"]
        return rate, (time.process_time() - t) / len(files) * 1000  # includes its one warm-up batch

    def batch(workers: int) -> tuple[float, float]:
        b = batch_rate(clusters[workers][1], model_path, data, work, 200)
        return b["scans_per_s"], b["worker_cpu_ms_per_scan"] + b["client_cpu_ms_per_scan"]

    try:
        steps = {"ceiling": ceiling, "burst": lambda: burst_rate(model_path, files, work),
                 "batch1": lambda: batch(1), "batch2": lambda: batch(2)}
        order = list(steps)
        for r in range(args.rounds):
            for name in order[r % len(order):] + order[:r % len(order)]:  # rotate: no step always goes first
                rate, ms = steps[name]()
                rates[name].append(rate)
                cpu[name].append(ms)
                print(f"round {r + 1} {name}: {rate:.1f} scans/s, {ms:.2f} CPU ms/scan", file=sys.stderr, flush=True)
        result["scans_per_s"] = {k: spread(v) for k, v in rates.items()}
        result["cpu_ms_per_scan"] = {k: spread(v) for k, v in cpu.items()}

        client = clusters[1][1]
        result["blas_worker"] = client.run(blas_report)
        chunks = {}
        for chunk in (50, 200, 1000):
            b = batch_rate(client, model_path, data, work, chunk)
            chunks[chunk] = b
        a, fixed = np.linalg.lstsq(np.array([[len(files), b["tasks"]] for b in chunks.values()], float),
                                   np.array([b["seconds"] for b in chunks.values()]), rcond=None)[0]
        result["chunks"] = {c: {"tasks": b["tasks"], "seconds": round(b["seconds"], 2),
                                "scans_per_s": round(b["scans_per_s"], 1),
                                "worker_cpu_ms_per_scan": round(b["worker_cpu_ms_per_scan"], 2),
                                "client_cpu_ms_per_scan": round(b["client_cpu_ms_per_scan"], 2),
                                "outside_tasks_ms_per_task": round((b["seconds"] - b["task_seconds"]) / b["tasks"] * 1000, 1)}
                            for c, b in chunks.items()}
        result["fit"] = {"ms_per_scan": round(a * 1000, 3), "ms_per_task": round(fixed * 1000, 1)}
        t = time.perf_counter()
        again = run_batch(Settings(data=data, output=chunks[200]["output"], model=model_path), Quiet(), client=client)
        assert again.judged == 0 and again.found == len(files)
        result["resume_1_worker_scans_per_s"] = round(len(files) / again.seconds, 1)
        result["resume_wall_s"] = round(time.perf_counter() - t, 2)

        client2 = clusters[2][1]
        client2.gather(client2.map(operator.neg, range(200)))  # warm-up
        t = time.perf_counter()
        client2.gather(client2.map(operator.neg, range(5000)))
        result["scheduler_us_per_task"] = round((time.perf_counter() - t) / 5000 * 1e6)
        result["load_average_at_end"] = os.getloadavg()
    finally:
        for c, client, _ in clusters.values():
            client.close()
            c.close()
        shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_and_data_options(ap, REPO)
    ap.add_argument("--scans", type=int, default=2000, help="scans per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="alternated rounds of the four rates")
    ap.add_argument("--task-only", action="store_true", help="only the CPU cost of the task code, without Dask")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    if not args.data.is_dir():
        sys.exit(f"bench_batch: no data at {args.data} (pass --data DIR)")
    r = run(args)
    print(json.dumps(r, default=str) if args.json else json.dumps(r, indent=2, default=str))


if __name__ == "__main__":
    main()
