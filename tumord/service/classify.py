"""The classify stage: complete files in, judged batches out.

Per file, in a thread pool (reading, hashing, OpenCV decoding and resizing release the GIL):
the safety checks, the bytes and their SHA-256, the header check, decoding and resizing.
Then one prediction for the whole batch with the model the batch started with. Every way a
file can be bad ends as a `Scan` with an `error` for a person; nothing here stops the service.
"""
from __future__ import annotations

import hashlib
import os
import queue
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from tumord.data.images import ImageError, decode_gray, resize
from tumord.model.checkpoint import Classifier
from tumord.model.explain import explanation_png
from tumord.service import safety
from tumord.service.intake import Inflight, Ready, utc_now
from tumord.service.ledger import Fingerprint, Ledger, Row
from tumord.service.stability import signature
from tumord.service.verdicts import printable


@dataclass(eq=False)
class Scan:
    ready: Ready
    rel: str  # path relative to the input folder (may hold undecodable bytes as surrogates)
    fingerprint: Fingerprint | None = None
    image: np.ndarray | None = None
    error: str | None = None  # why it failed, in words for a person
    changed: bool = False  # modified while being read: not complete after all
    previous: Row | None = None  # its row from an earlier attempt, if any
    probabilities: np.ndarray | None = None
    classified_at: str = ""
    explanation: bytes | None = None  # heat-map PNG, when the service is asked to explain

    @property
    def path(self) -> str:
        return self.ready.path

    @property
    def shown(self) -> str:
        """The relative path as verdicts, errors and logs report it."""
        return printable(self.rel)

    @property
    def already_done(self) -> bool:
        """Judged and recorded before; only its move out of the folder is left."""
        return self.previous is not None and self.previous.state == "done"


@dataclass
class Batch:
    model: Classifier
    scans: list[Scan] = field(default_factory=list)


@dataclass
class Limits:
    max_pixels: int
    max_bytes: int


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

    if stat.S_ISDIR(lst.st_mode):
        return fail("is a folder, not an image file")
    if stat.S_ISLNK(lst.st_mode):
        reason = safety.outside_link(path, root)
        if reason:
            return fail(reason)
    try:
        st = os.stat(path)
    except OSError as e:
        return fail(f"cannot be read ({e.strerror})")
    if not stat.S_ISREG(st.st_mode):
        return fail("is not a regular file (a device, pipe or socket)")
    if st.st_size > limits.max_bytes:
        return fail(f"is {st.st_size / 2**20:.0f} MiB; the limit is {limits.max_bytes / 2**20:.0f} MiB")
    try:
        before = signature(path) if not stat.S_ISLNK(lst.st_mode) else None
        with open(path, "rb") as f:
            data = f.read()
        if before is not None and signature(path) != before:
            scan.changed = True
            return scan
    except OSError as e:
        return fail(f"cannot be read ({e.strerror})")
    scan.fingerprint = Fingerprint.of(rel, lst, hashlib.sha256(data).hexdigest())
    try:
        safety.check_suffix(shown)
        safety.check_image(data, shown, limits.max_pixels)
        scan.image = resize(decode_gray(data, shown), model.preprocess)
    except ImageError as e:
        return fail(e.reason)
    except Exception as e:  # a decoder failing in some new way is still just a bad file
        return fail(f"could not be decoded ({type(e).__name__}: {e})")
    return scan


class Classify(threading.Thread):
    def __init__(self, *, root, ready: queue.Queue, out: queue.Queue, slot, ledger: Ledger, limits: Limits,
                 batch_size: int, threads: int, inflight: Inflight, retry, log, explain: bool = False,
                 predict_threads: int = 1):
        super().__init__(name="classify", daemon=True)
        self.root = os.path.abspath(root)
        self.ready, self.out, self.slot, self.ledger = ready, out, slot, ledger
        self.limits, self.batch_size, self.inflight, self.retry, self.log = limits, batch_size, inflight, retry, log
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="decode")
        # chunks of a batch predicted in parallel, one BLAS thread each: on two cores this uses the
        # second core while decoding leaves it idle, without BLAS threads waiting on each other
        self.predict_pool = ThreadPoolExecutor(predict_threads, thread_name_prefix="predict") \
            if predict_threads > 1 else None
        self.explain = explain
        self.stopping = threading.Event()
        self.heartbeat = time.monotonic()

    def stop(self) -> None:
        """Finish the batch in hand, then end; files still queued stay in the folder for next time."""
        self.stopping.set()

    def run(self) -> None:
        """Decodes batch k+1 in the pool while batch k is predicted, so both cores stay busy."""
        pending = None
        try:
            while True:
                self.heartbeat = time.monotonic()
                items = [] if self.stopping.is_set() else self._take(block=pending is None)
                started = self.start_batch(items) if items else None
                if pending is not None:
                    self.out.put(self.finish_batch(*pending))
                pending = started
                if pending is None and self.stopping.is_set():
                    return
        finally:
            self.pool.shutdown(wait=True)
            if self.predict_pool is not None:
                self.predict_pool.shutdown(wait=True)
            self.out.put(None)  # tells the commit stage nothing more comes

    def _take(self, block: bool) -> list[Ready]:
        try:
            items = [self.ready.get(timeout=0.2) if block else self.ready.get_nowait()]
        except queue.Empty:
            return []
        while len(items) < self.batch_size:
            try:
                items.append(self.ready.get_nowait())
            except queue.Empty:
                break
        return items

    def start_batch(self, items: list[Ready]):
        model = self.slot.model  # one model per batch: swaps land between batches
        return model, [self.pool.submit(prepare, r, self.root, model, self.limits) for r in items]

    def classify(self, items: list[Ready]) -> Batch:
        return self.finish_batch(*self.start_batch(items))

    def finish_batch(self, model: Classifier, futures) -> Batch:
        batch = Batch(model)
        for scan in (f.result() for f in futures):
            if scan.fingerprint is None:
                self.inflight.discard(scan.path)
                self.log.info("scan.skipped", file=scan.shown, reason="vanished before it could be read")
            elif scan.changed:
                self.inflight.discard(scan.path)
                self.retry(scan.path)
                self.log.info("scan.skipped", file=scan.shown,
                              reason="changed while being read; waiting for it to settle")
            else:
                scan.previous = self.ledger.find(scan.fingerprint)
                batch.scans.append(scan)
        todo = [s for s in batch.scans if s.image is not None and not s.already_done]
        if todo:
            probs = batch.model.predict(np.stack([s.image for s in todo]), pool=self.predict_pool)
            now = utc_now()
            for s, p in zip(todo, probs):
                s.probabilities, s.classified_at = p, now
                if self.explain:
                    s.explanation = explanation_png(batch.model, s.image)
        for s in batch.scans:
            s.image = None  # the commit stage needs only the probabilities
        return batch
