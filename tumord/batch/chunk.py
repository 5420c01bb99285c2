"""One Dask task: a chunk of scans read, skipped if already committed, decoded, predicted, committed.

Runs on a worker. The model comes from `ModelPlugin`, loaded once when the worker process starts
(and again in a worker that replaces a dead one), never per task. Each scan ends as a verdict or
an error record (`tumord.judge`, as the service's); a bad file fails only itself. The task
returns the table lines for all its scans, whichever attempt committed them, and counts.
"""
from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from distributed import WorkerPlugin, get_worker

from tumord.model.checkpoint import Classifier, load
from tumord.abstain.judge import AbstainSettings, judge
from tumord.data.images import ImageError
from tumord.judge import record as records
from tumord.judge.record import base_name, csv_cells, csv_columns, csv_row, utc_now
from tumord.judge.safety import check_suffix
from tumord.judge.scan import decode_checked, file_problem, read_hashed
from tumord.batch import store

PLUGIN = "tumord-model"
COMMIT_THREADS = 16  # parallel fsyncs share the file system's journal commits


class ModelPlugin(WorkerPlugin):
    """Loads the model once per worker process; tasks find it with `worker_model()`."""

    name = PLUGIN

    def __init__(self, path: str, version: str):
        self.path, self.version, self.model = path, version, None

    def setup(self, worker) -> None:
        import cv2
        from threadpoolctl import threadpool_limits

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # bad files are recorded by us
        threadpool_limits(1, user_api="blas")  # one task per core: BLAS threads would only wait on each other
        model = load(self.path)
        if model.identity["version"] != self.version:
            raise ValueError(f"{self.path}: worker {worker.address} loaded model {model.identity['version']}, "
                             f"but the run uses {self.version}; the file changed or workers see another file")
        self.model = model


def worker_model() -> Classifier:
    return get_worker().plugins[PLUGIN].model


@dataclass(frozen=True)
class Job:
    """What every task of a run needs besides its paths."""

    folder: str  # OUT/<model version>
    root: str | None  # links must stay inside it (a walked folder); None for a manifest
    max_pixels: int
    max_bytes: int
    abstain: AbstainSettings = field(default_factory=AbstainSettings)  # as the service's `abstain` settings


@dataclass
class Outcome:
    """A task's result: table lines for its scans and what happened to them."""

    lines: list[str] = field(default_factory=list)
    judged: int = 0  # committed by this task
    found: int = 0  # already committed, by an earlier run or an earlier attempt at this task
    labels: Counter = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    seconds: float = 0.0


@dataclass
class _Scan:
    path: str
    shown: str
    received_at: str
    size: int = 0
    sha256: str | None = None
    base: str = ""
    image: np.ndarray | None = None
    check_reasons: list[str] = field(default_factory=list)  # input checks failed: reasons to abstain
    error: str | None = None
    done: tuple[str, dict] | None = None  # its committed name and record, when found


def table_columns(class_names: list[str]) -> list[str]:
    """The service's verdicts.csv columns, then `error` (batch's table also lists failed scans)."""
    return csv_columns(class_names) + ["error"]


def table_line(record: dict, name: str, class_names: list[str]) -> str:
    """A verdict's row as in verdicts.csv; a failed scan's row has no label, no probabilities and no
    model, its failure time as classified_at, its error record as verdict, and the error."""
    if "error" not in record:
        return csv_row(csv_cells(record, class_names) + [""])
    unjudged = [""] * (4 + len(class_names))  # label, confidence, probabilities, model version and sha256
    return csv_row([record["file"], record["sha256"] or "", *unjudged, record["received_at"], record["failed_at"],
                    record["tumord_version"], f"{store.FAILED}/{name}.error.json", "", "", "", record["error"]])


def judge_chunk(items: list[tuple[str, str]], job: Job) -> Outcome:
    started = time.perf_counter()
    model = worker_model()
    folder = Path(job.folder)
    scans = [_read(path, shown, job, folder) for path, shown in items]
    todo = [s for s in scans if s.image is not None]
    judged = judge(model, np.stack([s.image for s in todo]), [s.check_reasons for s in todo], job.abstain) \
        if todo else []
    classified_at = utc_now()
    out = Outcome()

    def finish(scan: _Scan, judgement) -> tuple[bool, str, dict]:
        if scan.done is not None:
            return False, *scan.done
        if scan.error is not None:
            return store.commit(folder, scan.base, scan.shown, error=True, make=lambda name: records.failed(
                shown=scan.shown, error=scan.error, sha256=scan.sha256, size_bytes=scan.size,
                received_at=scan.received_at, moved_to=""))
        return store.commit(folder, scan.base, scan.shown, error=False, make=lambda name: records.classified(
            shown=scan.shown, sha256=scan.sha256, probabilities=judgement.probabilities,
            abstention=judgement.fields(), model=model, name=name, received_at=scan.received_at,
            classified_at=classified_at, archived_as=""))

    judgement_of = {id(s): j for s, j in zip(todo, judged)}
    with ThreadPoolExecutor(COMMIT_THREADS) as pool:
        committed = list(pool.map(lambda s: finish(s, judgement_of.get(id(s))), scans))
    store.sync(folder)
    for created, name, record in committed:
        out.judged += created
        out.found += not created
        if "error" in record:
            out.failures.append((record["file"], record["error"]))
        else:
            out.labels[record["label"]] += 1
        out.lines.append(table_line(record, name, model.class_names))
    out.seconds = time.perf_counter() - started
    return out


def _read(path: str, shown: str, job: Job, folder: Path) -> _Scan:
    """Checks, reads and hashes one scan; finds its committed record, or decodes it."""
    scan = _Scan(path, shown, utc_now())
    # a scan whose bytes cannot be read is named after its path (the service uses its received time)
    scan.base = base_name(shown, None, "path" + hashlib.sha256(os.fsencode(path)).hexdigest()[:12])
    scan.done = store.find(folder, scan.base, shown)
    if scan.done is not None:
        return scan
    try:
        lst = os.lstat(path)
    except OSError as e:
        scan.error = f"{shown} cannot be read ({e.strerror})"
        return scan
    scan.size = lst.st_size
    problem = file_problem(path, lst, job.root, job.max_bytes)
    if problem:
        scan.error = f"{shown} {problem[0]}"  # batch does not wait for permissions to change
        return scan
    try:
        data, scan.sha256 = read_hashed(path)
    except OSError as e:
        scan.error = f"{shown} cannot be read ({e.strerror})"
        return scan
    scan.base = base_name(shown, scan.sha256, scan.received_at)
    scan.done = store.find(folder, scan.base, shown)
    if scan.done is not None:
        return scan
    try:
        check_suffix(shown)
        scan.image, scan.check_reasons = decode_checked(data, shown, worker_model().preprocess, job.max_pixels,
                                                        job.abstain.checks)
    except ImageError as e:
        scan.error = f"{shown} {e.reason}"
    return scan
