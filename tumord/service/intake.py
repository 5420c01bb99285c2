"""Intake: which paths in the input folder are scans to classify, and when they are complete.

The watchdog handler only queues (kind, path) pairs; one intake thread owns all state. It feeds
files to `Stability`, and hands complete ones to the classifier through `ready`. Nothing is
missed: the backlog is scanned at start, and a periodic rescan (also triggered when watchdog
reports a kernel queue overflow) finds files whose events were lost.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from tumord.data.images import IMAGE_SUFFIXES
from tumord.service.stability import Stability
from tumord.judge.record import printable, utc_now

# names that writers use while a file is incomplete; they are renamed when done
TEMPORARY_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".swp", "~")

# the events that matter; opens and reads (including our own) are never delivered
EVENT_FILTER = [FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent, FileDeletedEvent,
                DirCreatedEvent, DirMovedEvent]


def is_temporary(name: str) -> bool:
    return name.startswith(".") or name.lower().endswith(TEMPORARY_SUFFIXES)


@dataclass
class Ready:
    """A complete file, handed to the classifier."""

    path: str
    received_at: str  # UTC ISO 8601, when the file was found complete
    ready_at: float  # time.monotonic() of the same moment, for latency


class Handler(FileSystemEventHandler):
    """Routes watchdog events into a queue; the intake thread does the rest."""

    def __init__(self, events: queue.SimpleQueue):
        self.events = events

    def dispatch(self, event: FileSystemEvent) -> None:
        if isinstance(event, (FileMovedEvent, DirMovedEvent)):
            if event.src_path:
                self.events.put(("gone", os.fsdecode(event.src_path)))
            if event.dest_path:
                self.events.put(("closed", os.fsdecode(event.dest_path)))  # a rename is a finished write
        elif isinstance(event, FileDeletedEvent):
            self.events.put(("gone", os.fsdecode(event.src_path)))
        elif isinstance(event, FileClosedEvent):
            self.events.put(("closed", os.fsdecode(event.src_path)))
        elif isinstance(event, (FileCreatedEvent, FileModifiedEvent, DirCreatedEvent)):
            self.events.put(("changed", os.fsdecode(event.src_path)))


class _OverflowWatch(logging.Handler):
    """watchdog logs a warning when the kernel drops events (queue overflow); that calls for a rescan."""

    def __init__(self, trigger, log):
        super().__init__(logging.WARNING)
        self.trigger, self.log = trigger, log

    def emit(self, record: logging.LogRecord) -> None:
        self.log.warning("observer.warning", message=record.getMessage(), action="rescanning the input folder")
        self.trigger()


class Intake(threading.Thread):
    def __init__(self, root: Path, *, recursive: bool, settle: float, stable: float, rescan_seconds: float,
                 ready: queue.Queue, inflight: "Inflight", log):
        super().__init__(name="intake", daemon=True)
        self.root = os.path.abspath(root)
        self.recursive, self.rescan_seconds = recursive, rescan_seconds
        self.stability = Stability(settle, stable)
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.handler = Handler(self.events)
        self.ready, self.inflight, self.log = ready, inflight, log
        self.stopping = threading.Event()
        self.heartbeat = time.monotonic()
        self._ignored: set[str] = set()  # logged once each, until they leave the folder
        self._rescan_requested = False
        self._overflow = _OverflowWatch(self.request_rescan, log)

    # --- called from other threads ---------------------------------------------------------
    def request_rescan(self) -> None:
        self.events.put(("rescan", ""))

    def retry(self, path: str) -> None:
        """A file changed while it was being read: watch it again from the start."""
        self.events.put(("changed", path))

    def stop(self) -> None:
        self.stopping.set()
        self.events.put(("stop", ""))

    def pending(self) -> int:
        return len(self.stability)

    # --- the intake thread ---------------------------------------------------------------
    def run(self) -> None:
        logging.getLogger("watchdog").addHandler(self._overflow)
        try:
            self.scan()  # the backlog; the observer is already running, so nothing falls between
            next_scan = time.monotonic() + self.rescan_seconds
            while not self.stopping.is_set():
                self.heartbeat = now = time.monotonic()
                due = self.stability.next_due()
                wait = min(next_scan, due if due is not None else next_scan) - now
                try:
                    kind, path = self.events.get(timeout=max(0.0, min(wait, 1.0)))
                    self._event(kind, path)
                    for _ in range(10000):  # drain a burst before checking windows
                        kind, path = self.events.get_nowait()
                        self._event(kind, path)
                except queue.Empty:
                    pass
                if self.stopping.is_set():
                    break
                if time.monotonic() >= next_scan or self._rescan_requested:
                    self._rescan_requested = False
                    self.scan()
                    next_scan = time.monotonic() + self.rescan_seconds
                self._release(self.stability.pop_ready())
        finally:
            logging.getLogger("watchdog").removeHandler(self._overflow)

    def _event(self, kind: str, path: str) -> None:
        if kind == "stop":
            return
        if kind == "rescan":
            self._rescan_requested = True
        elif kind == "gone":
            self.stability.forget(path)
            self._ignored.discard(path)
        elif self._wanted(path):
            self.stability.note(path, closed=kind == "closed")

    def _wanted(self, path: str) -> bool:
        """Whether `path` is a candidate scan; logs each ignored temporary file once."""
        rel = os.path.relpath(path, self.root)
        if rel == "." or rel == ".." or rel.startswith(".." + os.sep):
            return False  # the folder itself, or outside it
        parts = rel.split(os.sep)
        if len(parts) > 1 and not self.recursive:
            return False
        if any(p.startswith(".") for p in parts[:-1]):
            return False  # hidden folders, e.g. a synchronisation tool's scratch space
        # a folder named like an image is itself a (bad) scan; what is inside it is not
        if any(p.lower().endswith(IMAGE_SUFFIXES) for p in parts[:-1]):
            return False
        if is_temporary(parts[-1]):
            if path not in self._ignored:
                self._ignored.add(path)
                self.log.info("file.skipped", file=printable(rel),
                              reason="temporary name; waiting for it to be renamed")
            return False
        if os.path.isdir(path) and not os.path.islink(path) and not parts[-1].lower().endswith(IMAGE_SUFFIXES):
            return False  # an ordinary subfolder: its files arrive one by one
        return True

    def scan(self) -> None:
        """Every file in the folder that is not pending or being processed becomes a candidate."""
        seen: set[str] = set()
        stack = [self.root]
        while stack:
            try:
                with os.scandir(stack.pop()) as it:
                    entries = list(it)
            except OSError as e:
                self.log.warning("intake.scan_failed", folder=self.root, reason=e.strerror)
                continue
            for entry in entries:
                path = entry.path
                seen.add(path)
                if path in self.stability or self.inflight.busy(path):
                    continue
                if (self.recursive and entry.is_dir(follow_symlinks=False) and not entry.name.startswith(".")
                        and not entry.name.lower().endswith(IMAGE_SUFFIXES)):
                    stack.append(path)
                    continue
                if self._wanted(path):
                    self.stability.note(path, closed=False)
        self._ignored &= seen

    def _release(self, paths: list[str]) -> None:
        for path in paths:
            if self.inflight.busy(path):  # the previous file of that name is still on its way out
                self.stability.note(path, closed=True, delay=0.2)
                continue
            self.inflight.add(path)
            self.ready.put(Ready(path, utc_now(), time.monotonic()))


class Inflight:
    """Paths handed to the classifier and not yet moved out of the input folder."""

    def __init__(self):
        self._paths: set[str] = set()
        self._lock = threading.Lock()

    def add(self, path: str) -> None:
        with self._lock:
            self._paths.add(path)

    def discard(self, path: str) -> None:
        with self._lock:
            self._paths.discard(path)

    def busy(self, path: str) -> bool:
        with self._lock:
            return path in self._paths

    def __len__(self) -> int:
        with self._lock:
            return len(self._paths)
