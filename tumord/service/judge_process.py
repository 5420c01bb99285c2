"""The judge in a process of its own: reading, decoding and predicting beside the service, not
inside it.

In one process the judge's threads and the service's bookkeeping (watchdog's threads, the commit
stage, logging) take turns at Python's GIL, and the bookkeeping's turns stall the prediction
threads between their matrix products (docs/benchmarks.md, "The judge in a process of its own").
Here the judge has an interpreter of its own; the service's process hands it a batch of ready
files and gets the judged scans back (`BatchJudge`, the same code that runs in-process).

It is also a wall around the decoders. OpenCV and the DICOM pixel plugins are C code parsing
files from anywhere; if one of them crashes on a file, the judge process dies, not the service.
The batch is then judged again file by file in a new judge process, and the file that kills
that one too is failed with a reason, instead of crashing the service at every restart.

The pipe carries pickled messages, as multiprocessing's do: it joins this process and its own
child only. Model files are still only ever read by tumord.model.checkpoint (no code run).
The child ignores SIGTERM and SIGINT (systemd and a terminal send them to the whole group): the
service drains, then closes the pipe, and the child exits when it reads the end. If the service
is killed, the kernel kills the child too (PR_SET_PDEATHSIG).
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from multiprocessing.connection import Connection

from tumord.judge.scan import read_hashed
from tumord.model.checkpoint import Classifier
from tumord.service.classify import BatchJudge, Limits
from tumord.service.ledger import Fingerprint
from tumord.service.records import Ready, Scan

START_SECONDS = 120.0  # importing numpy and OpenCV on a cold, busy machine


class JudgeDied(RuntimeError):
    """The judge process ended while judging (a crash, or killed)."""


class JudgeProcess:
    """Judges batches in a child process; `judge()` has BatchJudge's signature. `start()` starts
    the child (the service calls it before it says it is ready); a batch finds a dead one
    replaced."""

    def __init__(self, root, limits: Limits, threads: int, predict_threads: int, blas_threads: int,
                 explain: bool, log):
        self.setup = {"root": os.path.abspath(root), "limits": limits, "threads": threads,
                      "predict_threads": predict_threads, "blas_threads": blas_threads, "explain": explain}
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.conn: Connection | None = None
        self.model: Classifier | None = None  # the model the child holds

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, beat=None, model: Classifier | None = None) -> None:
        """Starts the child unless it runs; returns once it is ready to judge. Given a model, the
        child gets it at once and warms it up before this returns."""
        if self.proc is not None and self.proc.poll() is None:
            return
        ours, theirs = socket.socketpair()
        with ours, theirs:
            self.proc = subprocess.Popen([sys.executable, "-m", "tumord.service.judge_process", str(theirs.fileno())],
                                         pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
            self.conn = Connection(ours.detach())
        self.model = None
        self.conn.send(self.setup)
        self._receive(beat, START_SECONDS)  # "ready": imports done, pools up
        self.log.info("judge.started", pid=self.proc.pid)
        if model is not None:
            self._send_model(model)
            self.conn.send(("judge", []))  # answered once the model is warm
            self._receive(beat, START_SECONDS)

    def judge(self, items: list[Ready], model: Classifier, beat=None) -> tuple[list[Scan], float]:
        try:
            return self._judge(items, model, beat)
        except JudgeDied as e:
            self.log.error("judge.died", reason=str(e), scans=len(items),
                           action="judging the batch again, one file at a time, in a new judge process")
        scans, seconds = [], 0.0
        for ready in items:  # the file that kills the judge again is failed, not retried forever
            try:
                (scan,), s = self._judge([ready], model, beat)
            except JudgeDied as e:
                scan, s = crashed_scan(ready, self.setup["root"], str(e)), 0.0
            scans.append(scan)
            seconds += s
        self.start(beat)  # ready for the next batch, also when the last file was the one
        return scans, seconds

    def _judge(self, items: list[Ready], model: Classifier, beat) -> tuple[list[Scan], float]:
        if self.proc is not None and self.proc.poll() is not None:
            self.log.error("judge.died", reason=self._ended("ended between batches"), action="starting a new one")
        self.start(beat)
        try:
            self._send_model(model)
            self.conn.send(("judge", items))
        except OSError as e:
            raise JudgeDied(self._ended(f"could not be sent the batch ({e})")) from None
        return self._receive(None, None)  # no beats while judging: a hung decoder stalls the stage, as in-process

    def _send_model(self, model: Classifier) -> None:
        if model is not self.model:
            self.conn.send(("model", model))
            self.model = model

    def _receive(self, beat, timeout: float | None):
        """The child's next answer, beating meanwhile; its error re-raised here."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not self.conn.poll(0.5):
                if beat is not None:
                    beat()
                if self.proc.poll() is not None:
                    break  # died; what it sent before is still read below
                if deadline is not None and time.monotonic() > deadline:
                    self.proc.kill()
                    raise JudgeDied(f"the judge process did not start within {timeout:.0f} s")
            kind, *rest = self.conn.recv()
        except (EOFError, OSError):
            raise JudgeDied(self._ended("ended")) from None
        if kind == "error":
            raise RuntimeError(f"the judge process failed: {rest[0]}")
        return rest[0] if kind == "ready" else tuple(rest)

    def _ended(self, what: str) -> str:
        code = self.proc.wait(5) if self.proc is not None else None
        how = f"killed by signal {signal.strsignal(-code) or -code}" if code is not None and code < 0 \
            else f"exit code {code}"
        self.close(grace_seconds=0)
        return f"the judge process {what} ({how})"

    def close(self, grace_seconds: float = 10.0) -> None:
        """Closes the pipe: the child finishes, reads the end and exits; killed if it has not
        within grace_seconds."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.proc is not None:
            try:
                self.proc.wait(grace_seconds)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def crashed_scan(ready: Ready, root: str, reason: str) -> Scan:
    """The scan of a file the judge process died on: failed with the reason, and fingerprinted
    (so that its verdict is recorded once), without decoding it here."""
    rel = os.path.relpath(ready.path, root)
    scan = Scan(ready, rel)
    try:
        lst = os.lstat(ready.path)
        _, sha256 = read_hashed(ready.path)
    except OSError:
        return scan  # gone or unreadable now: no fingerprint, so it is left for the intake to find again
    scan.fingerprint = Fingerprint.of(rel, lst, sha256)
    scan.error = f"{scan.shown} could not be judged: {reason} while reading or decoding it"
    return scan


# --- the child ---------------------------------------------------------------------------------

def _die_with_parent() -> None:
    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the child still ends at the pipe's end
    if os.getppid() == 1:  # the parent died before prctl
        os._exit(1)


def main(fd: int) -> int:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    conn = Connection(fd)
    import cv2

    from tumord.service.service import limit_blas_threads

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # the service logs bad files, once
    try:
        setup = conn.recv()
    except EOFError:
        return 0
    limit_blas_threads(setup["blas_threads"])
    judge = BatchJudge(setup["root"], setup["limits"], setup["threads"], setup["predict_threads"], setup["explain"])
    model = None
    conn.send(("ready", os.getpid()))
    try:
        while True:
            try:
                kind, payload = conn.recv()
            except EOFError:
                return 0
            if kind == "model":
                model = payload
                judge.warm(model)
                continue
            try:
                conn.send(("judged", *judge.judge(payload, model)))
            except Exception:
                conn.send(("error", traceback.format_exc(limit=-3)))
    finally:
        judge.close()


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
