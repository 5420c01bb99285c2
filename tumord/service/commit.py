"""The commit stage: verdicts made durable, recorded once, and inputs moved out, in that order.

For each batch (one thread, one batch at a time):

  1. ledger: reserve a unique name per new scan                       -> state received
  2. write <name>.json (verdict) or failed/<name>.error.json: temp file, fsync, rename, fsync folder
  3. ledger: the CSV lines and their byte offsets                      -> state written
  4. verdicts.csv: cut back to the batch's first offset, append, fsync
  5. move each input to archive/ or failed/ (or delete it), fsync both folders
  6. ledger                                                            -> state done

Steps 4 to 6 are `finish()`, which start-up runs too. After kill -9 at any point:

  - before 1: no row; the file is still in input/, found by the backlog scan, classified anew.
  - between 1 and 3: the row is `received`, the file is still in input/ (it is moved only in
    step 5); it is found again, `Ledger.find` returns the row, and the verdict is written again
    under the same name (rename replaces a whole file, so there is still exactly one). If the
    file vanished or changed meanwhile, start-up deletes that verdict and the row.
  - between 3 and 6: the rows are `written`; start-up's `finish()` truncates verdicts.csv to the
    batch's first offset (dropping a partial or complete earlier attempt), appends the stored
    lines, moves inputs that are still there (a file already moved is not found, so moving
    twice is harmless), and marks the rows done.
  - after 6: nothing left to do.

A scan whose row is `done` but whose file is still in input/ (its move failed, e.g. no
permission) is only moved again, never judged twice.
"""
from __future__ import annotations

import errno
import os
import queue
import shutil
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tumord import __version__
from tumord.service.classify import Batch, Scan
from tumord.service.events import NO_EVENTS
from tumord.service.intake import Inflight, utc_now
from tumord.service.ledger import Ledger, Row
from tumord.service.verdicts import TEMP_PREFIX, VerdictCsv, base_name, csv_line, printable, to_json, write_files


@dataclass
class Folders:
    input: Path
    output: Path
    archive: Path
    failed: Path
    delete_classified: bool


class Counters:
    def __init__(self):
        self.classified = self.failed = self.skipped = 0
        self.lock = threading.Lock()

    def add(self, **kw) -> None:
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)


class Commit(threading.Thread):
    def __init__(self, *, batches: queue.Queue, ledger: Ledger, csv: VerdictCsv, folders: Folders,
                 inflight: Inflight, counters: Counters, log, events=NO_EVENTS):
        super().__init__(name="commit", daemon=True)
        self.batches, self.ledger, self.csv, self.folders = batches, ledger, csv, folders
        self.inflight, self.counters, self.log, self.events = inflight, counters, log, events
        self.io = ThreadPoolExecutor(16, thread_name_prefix="fsync")  # parallel fsyncs share journal commits
        self.heartbeat = time.monotonic()
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            while True:
                self.heartbeat = time.monotonic()
                try:
                    batch = self.batches.get(timeout=1.0)
                except queue.Empty:
                    continue
                if batch is None:
                    return
                self.commit(batch)
        finally:
            self.io.shutdown(wait=True)

    # --- one batch -------------------------------------------------------------------------
    def commit(self, batch: Batch) -> None:
        repeats = [s for s in batch.scans if s.already_done]
        scans = [s for s in batch.scans if not s.already_done]
        if repeats:
            self._move_again(repeats)
        if not scans:
            return
        try:
            updates = self.record(scans, batch.model)
        except (OSError, sqlite3.Error) as e:  # e.g. a full disk: nothing has left input/, so all is retried
            self.log.error("output.write_failed", reason=str(e), files=len(scans))
            for s in scans:
                self.inflight.discard(s.path)
            time.sleep(1.0)
            return
        self.finish_until_done()
        for scan, update in zip(scans, updates):
            self.inflight.discard(scan.path)
            seconds = time.monotonic() - scan.ready.ready_at
            latency = round(seconds * 1000, 1)
            if update["outcome"] == "classified":
                self.counters.add(classified=1)
                self.log.info("scan.classified", file=scan.shown, label=update["label"],
                              confidence=round(float(scan.probabilities.max()), 4), model=update["model"],
                              verdict=update["name"] + ".json", latency_ms=latency)
            else:
                self.counters.add(failed=1)
                self.log.warning("scan.failed", file=scan.shown, reason=update["error"], moved_to=update["moved_to"])
            self.events.scan_recorded(update["name"], update["record"], update["outcome"], seconds)

    def record(self, scans: list[Scan], model) -> list[dict]:
        """Steps 1 to 3: names reserved, verdict and error files durable, rows `written`."""
        rows = self._reserve(scans)
        updates, files = [], []
        for scan, row in zip(scans, rows):
            update, record, target = self._outcome(scan, row, model)
            updates.append({**update, "record": record})  # the record is for the events, not the ledger
            files.append((target, to_json(record)))
            if scan.explanation is not None and scan.error is None:
                files.append((self.folders.output / record["explanation"], scan.explanation))
        write_files(files, self.io)
        at = self.csv.size()
        for u in updates:
            if u["csv_line"] is not None:
                u["csv_at"] = at
                at += len(u["csv_line"].encode("utf-8"))
        self.ledger.written(updates)
        return updates

    def _reserve(self, scans: list[Scan]) -> list[Row]:
        """Rows for new scans (step 1); scans seen before keep their row and name."""
        new, taken = [], set()
        for s in scans:
            if s.previous is None:
                base = base_name(s.shown, s.fingerprint.sha256, s.ready.received_at)
                name, n = base, 1
                while name in taken or self.ledger.name_taken(name) or self._files_exist(name, s.shown):
                    n += 1
                    name = f"{base}-{n}"
                taken.add(name)
                new.append((name, s.fingerprint, s.ready.received_at))
        fresh = iter(self.ledger.receive(new))
        return [s.previous if s.previous is not None else next(fresh) for s in scans]

    def _files_exist(self, name: str, rel: str) -> bool:
        f, suffix = self.folders, os.path.splitext(rel)[1]
        return any(p.exists() for p in (f.output / f"{name}.json", f.archive / f"{name}{suffix}",
                                        f.failed / f"{name}{suffix}", f.failed / f"{name}.error.json"))

    def _outcome(self, scan: Scan, row: Row, model) -> tuple[dict, dict, Path]:
        """The ledger update, the JSON record, and where the record goes."""
        f, suffix = self.folders, os.path.splitext(scan.shown)[1]
        update = {"id": row.id, "name": row.name, "label": None, "error": None, "model": None, "csv_line": None,
                  "csv_at": None}
        if scan.error is None:
            probs = scan.probabilities
            label = model.class_names[int(probs.argmax())]
            record = {
                "file": scan.shown,
                "sha256": scan.fingerprint.sha256,
                "label": label,
                "probabilities": {c: round(float(p), 6) for c, p in zip(model.class_names, probs)},
                "confidence": round(float(probs.max()), 6),
                "model": model.identity,
                "received_at": row.received_at,
                "classified_at": scan.classified_at,
                "tumord_version": __version__,
                "verdict": f"{row.name}.json",
                **({"explanation": f"{row.name}.png"} if scan.explanation is not None else {}),
                "archived_as": "" if f.delete_classified else str(f.archive / f"{row.name}{suffix}"),
            }
            update.update(outcome="classified", label=label, model=model.identity["version"],
                          csv_line=csv_line(record, self.csv.class_names), moved_to=record["archived_as"])
            return update, record, f.output / f"{row.name}.json"
        moved_to = str(f.failed / f"{row.name}{suffix}")
        record = {
            "file": scan.shown,
            "error": scan.error,
            "sha256": scan.fingerprint.sha256,
            "size_bytes": scan.fingerprint.size,
            "received_at": row.received_at,
            "failed_at": utc_now(),
            "moved_to": moved_to,
            "tumord_version": __version__,
        }
        update.update(outcome="failed", error=scan.error, moved_to=moved_to)
        return update, record, f.failed / f"{row.name}.error.json"

    # --- steps 4 to 6, also the crash recovery -----------------------------------------------
    def finish_until_done(self) -> None:
        """finish(), retried while the disk refuses: later batches must not start before this one ends."""
        delay = 0.5
        while True:
            try:
                self.finish()
                return
            except (OSError, sqlite3.Error) as e:
                self.log.error("output.finish_failed", reason=str(e), retry_in_s=delay)
                if self.stopping.wait(delay):
                    raise
                delay = min(delay * 2, 30.0)

    def finish(self) -> None:
        rows = self.ledger.in_state("written")
        if not rows:
            return
        lines = [r for r in rows if r.csv_line is not None]
        if lines:
            if not self.csv.path.exists():
                self.csv.open()
            self.csv.append("".join(r.csv_line for r in lines), at=min(r.csv_at for r in lines))
        touched = set(self.io.map(self._move, rows))
        for folder in {p for pair in touched for p in pair}:
            _fsync_dir(folder)
        self.ledger.done([r.id for r in rows], utc_now())

    def _move(self, row: Row) -> tuple[Path, ...]:
        """Moves (or deletes) the input of `row` if it is still the same file; returns folders to sync."""
        src = self.folders.input / row.fingerprint.path
        try:
            if not row.fingerprint.matches(os.lstat(src)):
                return ()  # another file took the name; it is a scan of its own
            if not row.moved_to:
                os.unlink(src)
                return (src.parent,)
            dst = Path(row.moved_to)
            _move(src, dst)
            return src.parent, dst.parent
        except FileNotFoundError:
            return ()  # moved before a crash, or removed by someone
        except OSError as e:
            self.log.error("scan.move_failed", file=printable(row.fingerprint.path), reason=e.strerror or str(e),
                           note="the verdict is recorded; the file is moved when next seen")
            return ()

    def _move_again(self, scans: list[Scan]) -> None:
        for s in scans:
            self.log.info("scan.skipped", file=s.shown,
                          reason=f"already has a verdict ({s.previous.name}); moving it out")
            self.counters.add(skipped=1)
        for pair in self.io.map(self._move, [s.previous for s in scans]):
            for folder in pair:
                _fsync_dir(folder)
        for s in scans:
            self.inflight.discard(s.path)

    # --- start-up -----------------------------------------------------------------------------
    def recover(self) -> dict:
        """Finishes what a killed process left: written rows, and received rows whose file is gone."""
        written = len(self.ledger.in_state("written"))
        self.finish()
        dropped = []
        for row in self.ledger.in_state("received"):
            src = self.folders.input / row.fingerprint.path
            try:
                if row.fingerprint.matches(os.lstat(src)):
                    continue  # still there: the backlog scan resumes it under the same name
            except OSError:
                pass
            for p in (self.folders.output / f"{row.name}.json", self.folders.output / f"{row.name}.png",
                      self.folders.failed / f"{row.name}.error.json"):
                p.unlink(missing_ok=True)
            dropped.append(row.id)
            self.log.info("scan.abandoned", file=printable(row.fingerprint.path), name=row.name,
                          reason="vanished or changed before its verdict was complete")
        self.ledger.drop(dropped)
        return {"finished": written, "abandoned": len(dropped)}


def _move(src: Path, dst: Path) -> None:
    """Moves a file by hard link then unlink, a folder by rename, across file systems by copy.

    Not a rename for files: a rename out of a watched folder is an IN_MOVED_FROM event, which
    watchdog holds for half a second to pair it with an IN_MOVED_TO, and every later event of the
    folder waits behind it. An unlink is reported at once. A crash between link and unlink
    leaves both names; the retry finds the link in place and only unlinks.
    """
    if not (src.is_dir() and not src.is_symlink()):
        try:
            os.link(src, dst, follow_symlinks=False)
        except FileExistsError:
            if not os.path.samestat(os.lstat(src), os.lstat(dst)):
                raise
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            _rename_or_copy(src, dst)
            return
        os.unlink(src)
        return
    _rename_or_copy(src, dst)


def _rename_or_copy(src: Path, dst: Path) -> None:
    try:
        os.rename(src, dst)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        # another file system: copy to a temporary name, sync, rename, then remove the source
        tmp = dst.with_name(f"{TEMP_PREFIX}{dst.name}.tmp")
        if src.is_dir() and not src.is_symlink():
            shutil.copytree(src, tmp, symlinks=True)
        else:
            shutil.copy2(src, tmp, follow_symlinks=False)
            if not tmp.is_symlink():
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
        os.rename(tmp, dst)
        _fsync_dir(dst.parent)
        shutil.rmtree(src) if src.is_dir() and not src.is_symlink() else os.unlink(src)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
