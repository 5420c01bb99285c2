"""The client side of `tumord batch`: the cluster, the chunks, progress, the table and the summary.

The table (`verdicts.csv` beside the verdicts) is appended per chunk, as each task's result
arrives, to a temporary file that replaces the old table at the end. Each scan is in exactly one
chunk and Dask hands the client one result per task, however often the task ran, so each scan
has exactly one row without a dedup index; its dedup key is the scan's path, made unique when
the inputs are collected. The rows come from the committed records (a retried or resumed task
reads the record that exists instead of making one), so they agree with the verdict files. A
killed client leaves the previous table in place; the re-run, which decodes nothing already
committed, writes the whole table again.
"""
from __future__ import annotations

import fcntl
import os
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tumord.abstain.judge import AbstainSettings
from tumord.atomic import fsync_dir
from tumord.batch import store
from tumord.batch.chunk import PLUGIN, Job, ModelPlugin, judge_chunk, table_columns
from tumord.batch.inputs import collect
from tumord.model.checkpoint import load
from tumord.judge.record import csv_row

TABLE = "verdicts.csv"
LOCK = ".tumord-batch.lock"
BOM = "\ufeff"  # as the service's verdicts.csv: spreadsheets read accents right


@dataclass
class Settings:
    data: Path
    output: Path
    model: Path
    scheduler: str | None = None  # address of a running cluster; None: a LocalCluster on this machine
    workers: int | None = None  # LocalCluster worker processes (default: one per core)
    chunk_size: int = 200
    max_pixels: int = 25_000_000
    max_bytes: int = 256 * 2**20
    progress: bool = False  # dask.distributed's text progress bar on stdout
    abstain: AbstainSettings = field(default_factory=AbstainSettings)  # the `abstain` settings, as the service's


@dataclass
class Summary:
    folder: Path
    inputs: int = 0
    judged: int = 0
    found: int = 0
    labels: Counter = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)
    chunk_errors: list[tuple[int, str]] = field(default_factory=list)  # (scans in the chunk, why it failed)
    seconds: float = 0.0
    task_seconds: float = 0.0
    chunks: int = 0
    workers: int = 0

    @property
    def rows(self) -> int:
        return self.judged + self.found

    @property
    def scans_per_s(self) -> float:
        return self.judged / self.seconds if self.seconds else 0.0


@contextmanager
def connect(settings: Settings):
    """A client of the cluster at --scheduler, or of a LocalCluster sized to this machine."""
    from distributed import Client, LocalCluster

    if settings.scheduler:
        with Client(settings.scheduler) as client:
            yield client
        return
    workers = settings.workers or os.cpu_count() or 1
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True) as cluster, Client(cluster) as client:
        yield client


@contextmanager
def locked(folder: Path):
    with open(folder / LOCK, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{folder}: another `tumord batch` is writing to this output folder") from None
        yield


def run(settings: Settings, log, client=None) -> Summary:
    """Judges every scan of settings.data that has no committed record yet; `client` overrides
    settings.scheduler/workers (tests bring their own cluster)."""
    model = load(settings.model)
    inputs = collect(settings.data, settings.output)
    folder = settings.output.absolute() / model.identity["version"]
    store.prepare(folder)
    summary = Summary(folder, inputs=len(inputs.items))
    with locked(folder):
        for p in store.sweep(folder):
            log.info("batch.swept", file=p.name, reason="temporary file left by a killed worker")
        if client is not None:
            _run(client, settings, model, inputs, summary, log)
        else:
            with connect(settings) as own:
                _run(own, settings, model, inputs, summary, log)
        store.sweep(folder)
    return summary


def _run(client, settings: Settings, model, inputs, summary: Summary, log) -> None:
    from distributed import as_completed

    summary.workers = len(client.scheduler_info()["workers"])
    log.info("batch.started", data=str(settings.data), scans=summary.inputs, output=str(summary.folder),
             model=model.identity, scheduler=client.scheduler.address, workers=summary.workers,
             dashboard=client.dashboard_link, chunk_size=settings.chunk_size)
    client.register_plugin(ModelPlugin(str(settings.model.absolute()), model.identity["version"]), name=PLUGIN)
    job = Job(str(summary.folder), inputs.root, settings.max_pixels, settings.max_bytes, settings.abstain)
    size = settings.chunk_size
    chunks = [inputs.items[i:i + size] for i in range(0, len(inputs.items), size)]
    summary.chunks = len(chunks)
    started = time.perf_counter()
    futures = client.map(judge_chunk, chunks, job=job, pure=False)
    bar = _progress_bar(futures) if settings.progress else None
    sizes = {f.key: len(c) for f, c in zip(futures, chunks)}
    table = summary.folder / TABLE
    tmp = table.with_name(f"{store.TEMP_PREFIX}{TABLE}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(BOM + csv_row(table_columns(model.class_names)))
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except Exception as e:  # the chunk as a whole (e.g. the output disk is full, or workers kept dying)
                summary.chunk_errors.append((sizes[future.key], f"{type(e).__name__}: {e}"))
                log.error("batch.chunk_failed", scans=sizes[future.key], reason=f"{type(e).__name__}: {e}",
                          note="these scans are judged when the run is repeated")
                continue
            finally:
                future.release()  # the lines are written: the workers need not keep them
            f.writelines(outcome.lines)
            summary.judged += outcome.judged
            summary.found += outcome.found
            summary.labels.update(outcome.labels)
            summary.failures += outcome.failures
            summary.task_seconds += outcome.seconds
        summary.seconds = time.perf_counter() - started
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, table)
    fsync_dir(summary.folder)
    if bar is not None:
        bar.join(5)


def _progress_bar(futures) -> threading.Thread:
    """dask.distributed's text progress bar, drawn from a thread while results are written."""
    from distributed import progress

    thread = threading.Thread(target=progress, args=(futures,), kwargs={"multi": False}, daemon=True)
    thread.start()
    return thread


def report(summary: Summary, limit: int = 20) -> str:
    """The end summary for a person: counts by label, failures with reasons, scans per second."""
    s = summary
    lines = [f"{s.inputs} scans: {s.judged} judged now, {s.found} already had a record in {s.folder} "
             f"(not decoded or predicted again)",
             "verdicts: " + (", ".join(f"{label} {n}" for label, n in sorted(s.labels.items())) or "none")
             + f"; failed {len(s.failures)}",
             f"{s.judged / s.seconds if s.seconds else 0:.1f} scans/s judged ({s.seconds:.1f} s, {s.chunks} chunks, "
             f"{s.workers} workers); table {s.folder / TABLE} ({s.rows} rows)"]
    for file, reason in s.failures[:limit]:
        lines.append(f"  failed: {reason}")
    if len(s.failures) > limit:
        lines.append(f"  ... and {len(s.failures) - limit} more (see {s.folder / store.FAILED})")
    for scans, reason in s.chunk_errors:
        lines.append(f"  NOT judged: a chunk of {scans} scans failed ({reason}); run the same command again")
    return "\n".join(lines)
