"""The classify stage: complete files in, judged batches out.

Per file, in a thread pool (reading, hashing, OpenCV decoding and resizing release the GIL):
the safety checks, the bytes and their SHA-256, the header check, decoding and resizing.
Then one prediction for the whole batch with the model the batch started with. Every way a
file can be bad ends as a `Scan` with an `error` for a person; nothing here stops the service.

Not every failure is final. A file that cannot be read (permission denied) is retried with
back-off for `retry_seconds`, then failed with what to do. A file that does not decode while it
may still be growing (modified within `stable_seconds`) is retried; only one that stayed
unchanged and still does not decode is failed. No partial image is ever classified.
"""
from __future__ import annotations

import errno
import os
import queue
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from tumord.abstain.judge import AbstainSettings, judge
from tumord.data.dicom import gray_frames, is_dicom
from tumord.data.images import ImageError, resize
from tumord.judge import safety
from tumord.judge.scan import decode_checked, file_problem, read_hashed
from tumord.model.checkpoint import Classifier
from tumord.model.explain import explanation_png
from tumord.service.events import NO_EVENTS
from tumord.service.ledger import Fingerprint, Ledger
from tumord.service.records import Batch, Inflight, Ready, Scan, utc_now
from tumord.service.series import instance_probabilities
from tumord.service.stability import signature
from tumord.service.worker import Worker

UNREADABLE_ADVICE = ("give the tumord service's user read permission on the file (and its folder), then move "
                     "the file from failed/ back into the input folder")


@dataclass
class Limits:
    max_pixels: int
    max_bytes: int
    stable_seconds: float = 2.0  # a file modified this recently may still be growing
    retry_seconds: float = 3600.0  # how long a file that cannot be judged yet is tried again
    abstain: AbstainSettings = field(default_factory=AbstainSettings)


def _retry_or_fail(scan: Scan, limits: Limits, reason: str, advice: str | None = None) -> Scan:
    """Try again later while within retry_seconds of the first attempt; then fail for good."""
    since = scan.ready.retrying_since
    waited = 0.0 if since is None else time.monotonic() - since
    if waited < limits.retry_seconds:
        scan.retry = reason
    else:
        scan.error = f"{scan.shown} {reason}" + (f", still after {waited:.0f} s of retrying" if since else "")
        scan.advice = advice
    return scan


def _may_be_growing(st: os.stat_result, limits: Limits) -> bool:
    return time.time() - max(st.st_mtime, st.st_ctime) < limits.stable_seconds


def prepare(ready: Ready, root: str, model: Classifier, limits: Limits) -> Scan:
    rel = os.path.relpath(ready.path, root)
    scan = Scan(ready, rel)
    path = ready.path
    try:
        lst = os.lstat(path)
    except FileNotFoundError:
        return scan  # vanished: no fingerprint
    scan.fingerprint = Fingerprint.of(rel, lst, None)

    shown = scan.shown

    def fail(reason: str) -> Scan:
        scan.error = f"{shown} {reason}"
        return scan

    problem = file_problem(path, lst, root, limits.max_bytes)
    if problem is not None:
        reason, unreadable = problem
        return _retry_or_fail(scan, limits, reason, UNREADABLE_ADVICE) if unreadable else fail(reason)
    try:
        before = signature(path) if not stat.S_ISLNK(lst.st_mode) else None
        data, sha256 = read_hashed(path)
        if before is not None and signature(path) != before:
            scan.changed = True
            return scan
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            return _retry_or_fail(scan, limits, f"cannot be read ({e.strerror})", UNREADABLE_ADVICE)
        return fail(f"cannot be read ({e.strerror})")
    scan.fingerprint = Fingerprint.of(rel, lst, sha256)
    dicom = is_dicom(data)  # recognised by content, with or without a .dcm name
    try:
        if not dicom:
            safety.check_suffix(shown)
    except ImageError as e:
        return fail(e.reason)
    try:
        if dicom:  # an image of (frames, size, size), each frame checked as a scan of its own
            grays, scan.dicom = gray_frames(data, shown, limits.max_pixels)
            scan.frame_reasons = [limits.abstain.checks.reasons(g) for g in grays]
            scan.image = np.stack([resize(g, model.preprocess) for g in grays])
        else:
            scan.image, scan.check_reasons = decode_checked(data, shown, model.preprocess, limits.max_pixels,
                                                            limits.abstain.checks)
    except Exception as e:  # ImageError, or a DICOM decoder failing in some new way: still just a bad file
        reason = e.reason if isinstance(e, ImageError) else f"could not be decoded ({type(e).__name__}: {e})"
        try:
            st = os.stat(path)  # the file's own times, also behind a link
        except OSError:
            st = lst
        if _may_be_growing(st, limits):  # perhaps a writer that paused: judge it once it holds still
            return _retry_or_fail(scan, limits, reason)
        return fail(reason)
    return scan


def timed_prepare(ready: Ready, root: str, model: Classifier, limits: Limits, taken_at: float = 0.0) -> Scan:
    started = time.perf_counter()
    scan = prepare(ready, root, model, limits)
    scan.decode_seconds = time.perf_counter() - started
    scan.taken_at = taken_at
    return scan


class BatchJudge:
    """The judge's work on one batch, in this process: each file prepared in a thread pool, then the
    decodable ones predicted together. Also what runs inside the judge process (judge_process.py)."""

    def __init__(self, root, limits: Limits, threads: int, predict_threads: int = 1, explain: bool = False):
        self.root, self.limits, self.threads, self.explain = os.path.abspath(root), limits, threads, explain
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="decode")
        # chunks of a batch predicted in parallel, one BLAS thread each: two small products on two
        # cores, without BLAS threads waiting on each other
        self.predict_pool = ThreadPoolExecutor(predict_threads, thread_name_prefix="predict") \
            if predict_threads > 1 else None

    def warm(self, model: Classifier) -> None:
        """One prediction of two blank scans, so that the first scan does not pay for the first
        prediction's allocations (the swap's trial prediction does this in the service's process)."""
        size = model.preprocess.size
        judge(model, np.zeros((2, size, size), np.uint8), [[], []], self.limits.abstain, self.predict_pool)

    def judge(self, items: list[Ready], model: Classifier, beat=None) -> tuple[list[Scan], float]:
        """The batch's scans (images dropped, probabilities filled in where a file could be judged)
        and the seconds its prediction took. `beat` is for judges that wait on another process."""
        scans = self._prepared(items, model)
        todo = [s for s in scans if s.image is not None and not (s.changed or s.retry)]
        predict_seconds = 0.0
        if todo:
            started = time.perf_counter()
            # a DICOM instance brings one image per frame: judged together, then regrouped
            images = [s.image if s.dicom is not None else s.image[None] for s in todo]
            reasons = [r for s in todo for r in (s.frame_reasons if s.dicom is not None else [s.check_reasons])]
            judged = judge(model, np.concatenate(images), reasons, self.limits.abstain, self.predict_pool)
            predict_seconds = time.perf_counter() - started
            starts = np.cumsum([0] + [len(i) for i in images])
            now = utc_now()
            for s, start, end in zip(todo, starts, starts[1:]):
                frames, driver = judged[start:end], 0
                if s.dicom is not None:  # the instance is judged by its frame of highest tumor probability
                    s.slice_probabilities = np.stack([j.probabilities for j in frames])
                    driver, _ = instance_probabilities(s.slice_probabilities, model.class_names)
                j = frames[driver]
                s.probabilities, s.judgement, s.classified_at = j.probabilities, j, now
                if self.explain:
                    s.explanation = explanation_png(model, s.image[driver] if s.dicom else s.image)
        for s in scans:
            s.image = None  # the commit stage needs only the probabilities
        return scans, predict_seconds

    def _prepared(self, items: list[Ready], model: Classifier) -> list[Scan]:
        """Prepares the files in the pool: one task per thread, each taking the next file until none
        is left (one hand-off per thread, not per file, and no thread idles while files are left)."""
        now = time.monotonic()
        scans: list[Scan | None] = [None] * len(items)
        left = iter(range(len(items)))  # shared by the tasks: next() on it is atomic under the GIL

        def work() -> None:
            for i in left:
                scans[i] = timed_prepare(items[i], self.root, model, self.limits, now)

        for task in [self.pool.submit(work) for _ in range(min(self.threads, len(items)))]:
            task.result()
        return scans

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        if self.predict_pool is not None:
            self.predict_pool.shutdown(wait=True)


class Classify(Worker):
    def __init__(self, *, root, ready: queue.Queue, out: queue.Queue, slot, ledger: Ledger, limits: Limits,
                 batch_size: int, threads: int, inflight: Inflight, retry, log, explain: bool = False,
                 predict_threads: int = 1, after: threading.Event | None = None, events=NO_EVENTS, judge=None):
        """after: an event to wait for before the first batch (the commit stage's start-up recovery).
        judge: what judges a batch (a JudgeProcess); by default a BatchJudge in this process."""
        super().__init__("classify")
        self.after = after
        self.ready, self.out, self.slot, self.ledger = ready, out, slot, ledger
        self.batch_size, self.inflight, self.retry, self.log = batch_size, inflight, retry, log
        self.judge = judge if judge is not None else BatchJudge(root, limits, threads, predict_threads, explain)
        self.events = events

    def run(self) -> None:
        """Judges a batch (decodes it, then predicts it), hands it on, then takes the next.
        Decoding the next batch while one was predicted ran four busy threads on two cores: more
        CPU per scan, more of it in the kernel, and a lower burst rate on an idle machine
        (docs/benchmarks.md, "Decode, then predict"). Once stopped, finishes the batch in hand;
        files still queued stay in the folder for next time."""
        try:
            while self.after is not None and not self.after.wait(0.5):
                self.beat()
            while not self.stopping.is_set():
                self.beat()
                items = self._take()
                if items:
                    self._hand_over(self.classify(items))
        finally:
            self.judge.close()

    def _hand_over(self, batch: Batch) -> None:
        """Waits while the commit stage is busy (a slow or full disk), still showing it is alive."""
        while True:
            self.beat()
            try:
                self.out.put(batch, timeout=1.0)
                return
            except queue.Full:
                continue

    def _take(self) -> list[Ready]:
        """The next batch: waits briefly for one file, then takes those already queued behind it
        (a lone scan is not kept waiting for company)."""
        try:
            items = [self.ready.get(timeout=0.2)]
        except queue.Empty:
            return []
        while len(items) < self.batch_size:
            try:
                items.append(self.ready.get_nowait())
            except queue.Empty:
                break
        return items

    def classify(self, items: list[Ready]) -> Batch:
        model = self.slot.model  # one model per batch: swaps land between batches
        scans, predict_seconds = self.judge.judge(items, model, self.beat)
        return self._judged(model, scans, predict_seconds)

    def _judged(self, model: Classifier, scans: list[Scan], predict_seconds: float) -> Batch:
        """The batch for the commit stage: files not to be judged yet are handed back to the intake,
        and a file already recorded (its row done) keeps its verdict and is only moved out."""
        batch = Batch(model)
        found = []
        for scan in scans:
            if scan.fingerprint is None:
                self.inflight.discard(scan.path)
                self.log.info("scan.skipped", file=scan.shown, reason="vanished before it could be read")
            elif scan.changed:
                self.inflight.discard(scan.path)
                self.retry(scan.path)
                self.log.info("scan.skipped", file=scan.shown,
                              reason="changed while being read; waiting for it to settle")
            elif scan.retry:
                self.inflight.discard(scan.path)
                self.retry(scan.path, scan.retry)
                if scan.ready.retrying_since is None:  # logged once, not at every attempt
                    self.log.info("scan.waiting", file=scan.shown, reason=scan.retry,
                                  action="tried again later; failed only if it stays like this")
            else:
                found.append(scan)
        for scan, previous in zip(found, self.ledger.find_many([s.fingerprint for s in found])):
            scan.previous = previous
            if scan.already_done:  # judged again only because the batch was judged in one go
                scan.probabilities = scan.judgement = scan.slice_probabilities = scan.explanation = None
            batch.scans.append(scan)
        done = time.monotonic()
        judged = [s for s in batch.scans if s.probabilities is not None]
        for s in batch.scans:
            s.judged_at = done
        self.events.batch_classified(len(batch.scans), [s.decode_seconds for s in batch.scans], predict_seconds,
                                     [done - s.ready.ready_at for s in judged])
        return batch
