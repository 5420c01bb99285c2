"""Intake: which paths in the input folder are scans to classify, and when they are complete.

The watchdog handler only queues (kind, path) pairs; one intake thread owns all state. It feeds
files to `Stability`, and hands complete ones to the classifier through `ready`. Nothing is
missed: the backlog is scanned at start, and a periodic rescan (also triggered when watchdog
reports a kernel queue overflow) finds files whose events were lost.

The intake also owns the observer's watch on the input folder: a folder deleted, renamed away
and recreated, or not there yet at start is reported (log and STATUS) and watched again, with
a full scan, as soon as it exists. With inotify it knows which files are open for writing (a
write seen and no close yet): those are not handed on, however long the writer pauses.
"""
from __future__ import annotations

import fnmatch
import logging
import os
import queue
import re
import time
from dataclasses import dataclass

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from tumord.data.images import IMAGE_SUFFIXES
from tumord.service.records import Inflight, Ready, printable, utc_now
from tumord.service.stability import Stability, signature
from tumord.service.worker import Worker

# names that writers and upload clients use while a file is incomplete (then renamed), or for
# their own scratch files: the default of watch.temporary_names (fnmatch patterns, any case)
TEMPORARY_NAMES = [".*", "~$*", "*.part", "*.partial", "*.filepart", "*.tmp", "*.temp", "*.crdownload",
                   "*.download", "*.swp", "*~"]

# the events that matter; opens and reads (including our own) are never delivered
EVENT_FILTER = [FileCreatedEvent, FileModifiedEvent, FileAttribEvent, FileClosedEvent, FileMovedEvent,
                FileDeletedEvent, DirCreatedEvent, DirMovedEvent]

MAX_RETRY_DELAY = 60.0  # seconds between attempts at a file that cannot be read yet, at most


def temporary_matcher(patterns: list[str]):
    """is_temporary(name) for fnmatch patterns, compared without regard to case (one regular
    expression for all of them: each file's name is checked once, not once per pattern)."""
    if not patterns:
        return lambda name: False
    either = re.compile("|".join(fnmatch.translate(p.lower()) for p in patterns))
    return lambda name: either.match(name.lower()) is not None


is_temporary = temporary_matcher(TEMPORARY_NAMES)


class Handler(FileSystemEventHandler):
    """Routes watchdog events into a queue; the intake thread does the rest."""

    def __init__(self, events: queue.SimpleQueue):
        self.events = events

    def dispatch(self, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        if isinstance(event, (FileMovedEvent, DirMovedEvent)):
            if event.src_path:
                self.events.put(("gone", src))
            if event.dest_path:
                self.events.put(("moved", os.fsdecode(event.dest_path)))  # a rename is a finished write
        elif isinstance(event, FileDeletedEvent):
            self.events.put(("gone", src))
        elif isinstance(event, FileClosedEvent):
            self.events.put(("closed", src))
        elif isinstance(event, FileModifiedEvent):
            self.events.put(("written", src))
        elif isinstance(event, FileAttribEvent):
            self.events.put(("attrib", src))
        elif isinstance(event, (FileCreatedEvent, DirCreatedEvent)):
            self.events.put(("created", src))


class _OverflowWatch(logging.Handler):
    """watchdog logs a warning when the kernel drops events (queue overflow); that calls for a rescan."""

    def __init__(self, trigger, log):
        super().__init__(logging.WARNING)
        self.trigger, self.log = trigger, log

    def emit(self, record: logging.LogRecord) -> None:
        self.log.warning("observer.warning", message=record.getMessage(), action="rescanning the input folder")
        self.trigger()


@dataclass
class _Retry:
    since: float  # time.monotonic() of the first attempt that could not judge the file
    attempts: int = 0


class Intake(Worker):
    def __init__(self, root, *, recursive: bool, settle: float, stable: float, rescan_seconds: float,
                 ready: queue.Queue, inflight: Inflight, log, observer=None, writers: bool = False,
                 temporary_names: list[str] | None = None, retry_seconds: float = 3600.0):
        """observer: a started watchdog observer whose watch on `root` this thread keeps; writers: its
        events say when a file is closed after writing (inotify), so files still open are held back."""
        super().__init__("intake")
        self.root = os.path.abspath(root)
        self.recursive, self.rescan_seconds, self.retry_seconds = recursive, rescan_seconds, retry_seconds
        self.stability = Stability(settle, stable)
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.handler = Handler(self.events)
        self.ready, self.inflight, self.log = ready, inflight, log
        self.observer, self.writers = observer, writers
        self.is_temporary = temporary_matcher(temporary_names if temporary_names is not None else TEMPORARY_NAMES)
        self._ignored: set[str] = set()  # logged once each, until they leave the folder
        self._writing: dict[str, float] = {}  # open for writing: path -> time.monotonic() of its last write
        self._created: set[str] = set()  # created (seen) and not yet closed: its creator may still write
        self._held: set[str] = set()  # held back as open for writing, logged once each
        self._retries: dict[str, _Retry] = {}
        self._rescan_requested = False
        self._overflow = _OverflowWatch(self.request_rescan, log)
        self._watch = None  # the observer's watch on root
        self._watched: tuple[int, int] | None = None  # (st_dev, st_ino) of the folder being watched

    # --- called from other threads ---------------------------------------------------------
    def request_rescan(self) -> None:
        self.events.put(("rescan", ""))

    def retry(self, path: str, why: str | None = None) -> None:
        """A file changed while it was being read (why=None): watch it again from the start. Or it
        could not be judged yet (why: unreadable, may still be growing): try again after a back-off."""
        self.events.put(("later", path) if why else ("changed", path))

    def stop(self) -> None:
        super().stop()
        self.events.put(("stop", ""))

    def pending(self) -> int:
        return len(self.stability)

    # --- the intake thread ---------------------------------------------------------------
    def run(self) -> None:
        logging.getLogger("watchdog").addHandler(self._overflow)
        try:
            self._check_root()
            self.scan()  # the backlog; the observer is already running, so nothing falls between
            next_scan = time.monotonic() + self.rescan_seconds
            next_check = time.monotonic() + 0.5
            while not self.stopping.is_set():
                self.beat()
                now = time.monotonic()
                due = self.stability.next_due()
                wait = min(next_scan, next_check, due if due is not None else next_scan) - now
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
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + 0.5
                    if self._check_root():
                        self._rescan_requested = True
                if time.monotonic() >= next_scan or self._rescan_requested:
                    self._rescan_requested = False
                    self.scan()
                    next_scan = time.monotonic() + self.rescan_seconds
                self._release(self.stability.pop_ready())
        finally:
            logging.getLogger("watchdog").removeHandler(self._overflow)

    def _check_root(self) -> bool:
        """Keeps the observer on the folder now at `root`; True when it was (re)watched just now."""
        try:
            st = os.stat(self.root)
            now = (st.st_dev, st.st_ino) if os.path.isdir(self.root) else None
        except OSError:
            now = None
        if now is not None and now == self._watched and (self._watch is None or self._emitter_alive()):
            return False
        if self.observer is not None and self._watch is not None:
            try:
                self.observer.unschedule(self._watch)
            except (KeyError, OSError):
                pass
            self._watch = None
        if now is None:
            self._watched = None
            reason = f"the input folder {self.root} does not exist (deleted, renamed or not mounted); waiting for it"
            if self.report(reason, waiting=True):
                self.log.error("input.missing", folder=self.root, action="watched again as soon as it exists")
            return False
        replaced = self._watched is not None
        if self.observer is not None:
            try:
                self._watch = self.observer.schedule(self.handler, self.root, recursive=self.recursive,
                                                     event_filter=EVENT_FILTER)
            except OSError as e:
                if self.report(f"cannot watch the input folder {self.root} ({e.strerror})", waiting=True):
                    self.log.error("input.unwatchable", folder=self.root, reason=e.strerror)
                return False
        self._watched = now
        old = self.resolved()
        if old is not None or replaced:
            self.log.warning("input.watched_again", folder=self.root,
                             reason=old.reason if old else "the folder was replaced by another of that name",
                             action="scanning it for files")
        return True

    def _emitter_alive(self) -> bool:
        """inotify and polling emitters end themselves when the watched folder is deleted."""
        return all(e.is_alive() for e in self.observer.emitters)

    def _event(self, kind: str, path: str) -> None:
        if kind == "stop":
            return
        if kind == "rescan":
            self._rescan_requested = True
        elif kind == "gone":
            self.stability.forget(path)
            self._ignored.discard(path)
            self._writing.pop(path, None)
            self._created.discard(path)
            self._held.discard(path)
            self._retries.pop(path, None)
        elif kind == "later":
            self._later(path)
        elif kind == "attrib":  # e.g. permissions fixed: a file waiting for that is tried again soon
            if path in self._retries and path not in self._writing:
                self.stability.note(path, closed=True)
        elif self._wanted(path):
            if kind == "created" and self.writers:
                self._created.add(path)
            elif kind == "written" and self.writers and self._writer_at_work(path):
                self._writing[path] = time.monotonic()
            elif kind in ("closed", "moved"):
                self._writing.pop(path, None)
                self._created.discard(path)
            # a file renamed into the folder was complete before it arrived: it is read at once (its
            # signature is still compared). A close after writing waits `settle`: a writer may reopen.
            self.stability.note(path, closed=kind in ("closed", "moved"), delay=0.0 if kind == "moved" else None)

    def _writer_at_work(self, path: str) -> bool:
        """Whether a modify event means a writer has the file open. Linux reports setting the mtime
        alone (`touch -m`, a sync tool fixing times) as a modification too, with no close to follow:
        that must not hold the file back. So a writer is assumed only for a file created and not yet
        closed, one already held, or one whose size or inode changed since it was last seen."""
        if path in self._created or path in self._writing:
            return True
        before = self.stability.signature_of(path)
        if before is None:
            return False  # handed on already: a change now is caught when it is read or moved out
        now = signature(path)
        return now is not None and now[:2] != before[:2]  # (inode, size)

    def _later(self, path: str) -> None:
        r = self._retries.setdefault(path, _Retry(time.monotonic()))
        r.attempts += 1
        delay = min(self.stability.stable * 2 ** (r.attempts - 1), MAX_RETRY_DELAY)
        self.stability.note(path, closed=False, delay=delay)

    def _wanted(self, path: str) -> bool:
        """Whether `path` is a candidate scan; logs each ignored temporary file or subfolder once."""
        # the observer's paths are the folder's joined with a name: a prefix, no relpath, per event
        rel = path[len(self.root) + 1:] if path.startswith(self.root + os.sep) else os.path.relpath(path, self.root)
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
        if self.is_temporary(parts[-1]):
            self._skip_once(path, rel, "temporary name; waiting for it to be renamed")
            return False
        if os.path.isdir(path) and not os.path.islink(path) and not parts[-1].lower().endswith(IMAGE_SUFFIXES):
            if not self.recursive:
                self._skip_once(path, rel, "a subfolder: its files are not classified, as watch.recursive is false")
            return False  # an ordinary subfolder: with recursive, its files arrive one by one
        return True

    def _skip_once(self, path: str, rel: str, reason: str) -> None:
        if path not in self._ignored:
            self._ignored.add(path)
            self.log.info("file.skipped", file=printable(rel), reason=reason)

    def scan(self) -> None:
        """Every file in the folder that is not pending or being processed becomes a candidate."""
        seen: set[str] = set()
        stack = [self.root]
        while stack:
            try:
                with os.scandir(stack.pop()) as it:
                    entries = list(it)
            except FileNotFoundError:
                continue  # the folder is gone; _check_root reports it
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
        now = time.monotonic()
        for path in paths:
            if self.inflight.busy(path):  # the previous file of that name is still on its way out
                self.stability.note(path, closed=True, delay=0.2)
                continue
            if path in self._writing and now - self._writing[path] < self.retry_seconds:
                self.stability.note(path, closed=False)  # still open for writing: a paused writer
                if path not in self._held:
                    self._held.add(path)
                    self.log.info("file.waiting", file=printable(os.path.relpath(path, self.root)),
                                  reason="open for writing; handed on once its writer closes it",
                                  at_most_s=self.retry_seconds)
                continue
            self._writing.pop(path, None)
            self._created.discard(path)
            self._held.discard(path)
            retry = self._retries.get(path)
            self.inflight.add(path)
            self.ready.put(Ready(path, utc_now(), now, retrying_since=retry.since if retry else None))

