"""The commit stage: verdicts made durable, recorded once, and inputs moved out, in that order.

For each group (one thread, one group at a time). A group is every judged batch waiting when the
stage gets to it (group commit: when the disk is the bottleneck, batches queue up and share one
set of syncs; an idle service commits a lone scan at once):

  1. ledger: reserve a unique name per new scan                       -> state received
  2. write <name>.json (verdict) or failed/<name>.error.json under temporary names, one sync
     (their bytes durable), rename them all, one sync (the names durable): atomic.write_many
  3. ledger: the CSV lines, their byte offsets and the CSV's inode     -> state written
  4. verdicts.csv: cut back to the group's first offset, append, fsync
  5. move each input to archive/ or failed/ (or delete it), one sync of the folders
  6. ledger                                                            -> state done

Each ledger step is one transaction for the whole group. A sync is one syncfs(2) per file system
where it is trusted (tumord.syncfs), else an fsync per file and folder, in parallel. Either way
each step is durable before the next begins, which is all the recovery below relies on. Steps
4 to 6 are `finish()`, which start-up runs too. After kill -9 at any point:

  - before 1: no row; the file is still in input/, found by the backlog scan, classified anew.
  - between 1 and 3: the row is `received`, the file is still in input/ (it is moved only in
    step 5); it is found again, `Ledger.find` returns the row, and the verdict is written again
    under the same name (rename replaces a whole file, so there is still exactly one). If the
    file vanished or changed meanwhile, start-up deletes that verdict and the row.
  - within 2: the bytes are durable before the first rename, so a name that survives a power
    cut holds its whole record, never an empty or partial file; a rename not yet durable may be
    lost, which is harmless as the row is still `received` (above). Temporary files left behind
    are swept at start-up. The names are durable before step 3 says `written`.
  - between 3 and 6: the rows are `written`; `finish()` truncates verdicts.csv to the group's
    first offset (dropping a partial or complete earlier attempt), appends the stored lines,
    moves inputs that are still there (a file already moved is not found, so moving twice is
    harmless), and marks the rows done. If verdicts.csv was rotated (renamed or deleted) since
    the offsets were stored, they are first moved to the end of a new file, in the ledger.
  - after 6: nothing left to do.

A scan whose row is `done` but whose file is still in input/ (its move failed, e.g. no
permission) is only moved again, never judged twice.

A step that fails (a full disk, a read-only file system) is retried with back-off while the
group stays in hand: nothing leaves input/ before its verdict is durable, STATUS says why, and
work resumes by itself. On SIGTERM a retry is abandoned; the next start completes the group.
"""
from __future__ import annotations

import os
import queue
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tumord.atomic import sync_folders, write_many
from tumord.service import moves
from tumord.service.events import NO_EVENTS
from tumord.service.ledger import Ledger, Row
from tumord.service.records import Batch, Counters, Folders, Scan, Verdict, printable, utc_now
from tumord.service.series import instance_fields
from tumord.service.verdicts import (
    VerdictCsv,
    base_name,
    csv_line,
    error_record,
    mark_changed_after,
    to_json,
    verdict_record,
)
from tumord.service.worker import Worker, problem

MAX_RETRY_SECONDS = 5.0  # longest pause between attempts at a failing step
GROUP_SCANS = 512  # most scans committed together (waiting batches are taken until this many)
MOVE_RUNS = 4  # a group's inputs are moved out by this many threads at most


class Abandoned(Exception):
    """A failing step was given up because the service is stopping; the next start completes it."""


class Commit(Worker):
    def __init__(self, *, batches: queue.Queue, ledger: Ledger, csv: VerdictCsv, folders: Folders,
                 inflight, counters: Counters, log, upstream: threading.Thread | None = None, abstentions=None,
                 series=None, events=NO_EVENTS):
        super().__init__("commit")
        self.batches, self.ledger, self.csv, self.folders = batches, ledger, csv, folders
        self.abstentions = abstentions  # AbstentionTracker: logs each abstention, the drift alarm
        self.inflight, self.counters, self.log, self.upstream, self.events = inflight, counters, log, upstream, events
        self.series = series  # SeriesTracker: told of each DICOM verdict once it is durable
        self.io = ThreadPoolExecutor(64, thread_name_prefix="fsync")  # parallel fsyncs share journal commits (no syncfs)
        self.recovered: dict | None = None
        # the folders as strings ending in a separator: four names are checked per new scan
        self._folder_names = tuple(os.path.join(p, "") for p in (folders.output, folders.archive, folders.failed))
        # set once start-up recovery is over: batches judged before it could hold rows it changes
        self.started = threading.Event()

    def run(self) -> None:
        """Recovers, then commits batches until stopped and the classifier has handed over its last."""
        abandoned = False
        try:
            try:
                self.retrying("start-up", self.start_up)
            except Abandoned:
                abandoned = True
            self.started.set()
            while True:
                self.beat()
                try:
                    batch = self.batches.get(timeout=0.5)
                except queue.Empty:
                    if self.stopping.is_set() and not (self.upstream and self.upstream.is_alive()):
                        return
                    continue
                group = [batch]
                while sum(len(b.scans) for b in group) < GROUP_SCANS:  # judged meanwhile: committed together
                    try:
                        group.append(self.batches.get_nowait())
                    except queue.Empty:
                        break
                if abandoned:  # stopping with the disk still refusing: these scans wait in input/
                    self._release([s for b in group for s in b.scans])
                    continue
                try:
                    self.commit(*group)
                except Abandoned:
                    abandoned = True
        finally:
            self.io.shutdown(wait=True)

    def retrying(self, step: str, work):
        """work(), again with back-off while it fails; reports the trouble once and its end."""
        delay = 0.25
        while True:
            self.beat()
            try:
                result = work()
            except (OSError, sqlite3.Error) as e:
                reason, waiting = problem(e, self.folders.output)
                if self.report(reason, waiting):
                    self.log.error("output.waiting" if waiting else "output.failing", reason=reason, step=step,
                                   detail=str(e), action="retrying; the scans stay in the input folder until then")
                if self.stopping.wait(delay):
                    raise Abandoned from e
                delay = min(delay * 2, MAX_RETRY_SECONDS)
                continue
            old = self.resolved()
            if old is not None:
                self.log.info("output.resumed", reason=old.reason, after_s=round(time.monotonic() - old.since, 1))
            return result

    def _release(self, scans: list[Scan]) -> None:
        for s in scans:
            self.inflight.discard(s.path)

    # --- one group --------------------------------------------------------------------------
    def commit(self, *batches: Batch) -> None:
        """Commits one or more judged batches as one group (each scan with the model of its batch)."""
        started = time.monotonic()
        repeats = [s for b in batches for s in b.scans if s.already_done]
        todo = [(s, b.model) for b in batches for s in b.scans if not s.already_done]
        scans, models = [s for s, _ in todo], [m for _, m in todo]
        if repeats:
            self._move_again(repeats)
        if not scans:
            return
        try:
            verdicts = self.retrying("record", lambda: self.record(scans, models))
            _, stayed = self.retrying("finish", self.finish)
        except Abandoned:
            self._release(scans)
            raise
        for scan, v in zip(scans, verdicts):
            self.inflight.discard(scan.path)
            now = time.monotonic()
            seconds = now - scan.ready.ready_at
            self._log_outcome(v, scan.shown, latency_ms=round(seconds * 1000, 1),
                              stages_ms=scan.stages_ms(started, now),
                              **({"replaces": scan.replaces + ".json"} if scan.replaces else {}))
            if self.abstentions is not None and scan.judgement is not None and v.outcome == "classified":
                self.abstentions.observe(scan.shown, scan.judgement)
            self.events.scan_recorded(v.name, scan.record, v.outcome, seconds)
        self._log_stayed(stayed)

    def _log_outcome(self, v: Verdict | Row, shown: str, **extra) -> None:
        if v.outcome == "classified":
            self.counters.add(classified=1)
            self.log.info("scan.classified", file=shown, label=v.label, model=v.model, verdict=v.name + ".json",
                          **extra)
        else:
            self.counters.add(failed=1)
            self.log.warning("scan.failed", file=shown, reason=v.error, moved_to=v.moved_to, **extra)

    def _log_stayed(self, rows: list[Row]) -> None:
        for r in rows:
            self.log.warning("scan.changed_after_judging", file=printable(r.fingerprint.path), verdict=r.name + ".json",
                             note="not archived; its new content is judged again and that verdict names this one")

    def record(self, scans: list[Scan], models: list) -> list[Verdict]:
        """Steps 1 to 3: names reserved, verdict and error files durable, rows `written`; `models[i]`
        is the model that judged scans[i] (a group's batches may have been judged by different ones)."""
        rows = self._reserve(scans)
        verdicts, files, dicom = [], [], []
        for scan, row, model in zip(scans, rows, models):
            verdict, record, target = self._outcome(scan, row, model)
            verdicts.append(verdict)
            scan.record = record
            if scan.dicom is not None and scan.error is None:
                dicom.append((scan, record))
            files.append((target, to_json(record)))
            if scan.explanation is not None and scan.error is None:
                files.append((self.folders.output / record["explanation"], scan.explanation))
        write_many(files, self.io)
        if self.series is not None and dicom:  # before `written`: a crash in between re-notes the same rows
            self.series.note_many(dicom)
        st = self.csv.ensure()
        at = st.st_size
        for v in verdicts:
            if v.csv_line is not None:
                v.csv_at, v.csv_ino = at, st.st_ino
                at += len(v.csv_line.encode("utf-8"))
        self.ledger.written(verdicts)
        return verdicts

    def _reserve(self, scans: list[Scan]) -> list[Row]:
        """Rows for new scans (step 1); scans seen before keep their row and name. A retry after a
        failure finds the rows of its first attempt in `previous`."""
        new, taken = [], set()
        fresh = [s for s in scans if s.previous is None]
        stayed = self.ledger.stayed_many([s.fingerprint.path for s in fresh])  # one query each for the group
        bases = {s: base_name(s.shown, s.fingerprint.sha256, s.ready.received_at) for s in fresh}
        in_ledger = self.ledger.names_taken(list(bases.values()))
        for s in fresh:
            s.replaces = stayed.get(s.fingerprint.path)
            base = name = bases[s]
            n = 1
            while (name in taken or (name in in_ledger if n == 1 else self.ledger.name_taken(name))
                   or self._files_exist(name, s.shown)):
                n += 1
                name = f"{base}-{n}"
            taken.add(name)
            new.append((s, name))
        for (s, _), row in zip(new, self.ledger.receive([(n, s.fingerprint, s.ready.received_at) for s, n in new])):
            s.previous = row
        return [s.previous for s in scans]

    def _files_exist(self, name: str, rel: str) -> bool:
        output, archive, failed = self._folder_names
        suffix = os.path.splitext(rel)[1]
        return any(os.path.exists(path) for path in (
            f"{output}{name}.json", f"{archive}{name}{suffix}", f"{failed}{name}{suffix}", f"{failed}{name}.error.json"))

    def _outcome(self, scan: Scan, row: Row, model) -> tuple[Verdict, dict, Path]:
        """The ledger's verdict, the JSON record, and where the record goes."""
        f, suffix = self.folders, os.path.splitext(scan.shown)[1]
        if scan.error is None:
            archived_as = "" if f.delete_classified else str(f.archive / f"{row.name}{suffix}")
            record = {**verdict_record(scan, row.name, row.received_at, model, archived_as),
                      **instance_fields(scan, model.class_names)}
            verdict = Verdict(row.id, row.name, "classified", archived_as, label=record["label"],
                              model=model.identity["version"], csv_line=csv_line(record, self.csv.class_names))
            return verdict, record, f.output / f"{row.name}.json"
        moved_to = str(f.failed / f"{row.name}{suffix}")
        verdict = Verdict(row.id, row.name, "failed", moved_to, error=scan.error)
        return verdict, error_record(scan, row.received_at, moved_to), f.failed / f"{row.name}.error.json"

    # --- steps 4 to 6, also the crash recovery -----------------------------------------------
    def finish(self) -> tuple[list[Row], list[Row]]:
        """Steps 4 to 6 for the rows in `written`; returns them and those whose input stayed."""
        rows = self.ledger.in_state("written")
        if not rows:
            return [], []
        lines = [r for r in rows if r.csv_line is not None]
        if lines:
            st = self.csv.ensure()
            if any(r.csv_ino is not None and r.csv_ino != st.st_ino for r in lines):
                self._rebase(lines, st)
            self.csv.append("".join(r.csv_line for r in lines), at=min(r.csv_at for r in lines),
                            ino=st.st_ino if lines[0].csv_ino is not None else None)
        results = self._move_all(rows)
        sync_folders({p for folders, _ in results for p in folders}, self.io)
        stayed = [r for r, (_, kept) in zip(rows, results) if kept]
        for r in stayed:
            f = self.folders
            mark_changed_after(f.output / f"{r.name}.json" if r.outcome == "classified"
                               else f.failed / f"{r.name}.error.json")
        self.ledger.done([r.id for r in rows], utc_now(), {r.id for r in stayed})
        return rows, stayed

    def _rebase(self, lines: list[Row], st: os.stat_result) -> None:
        """verdicts.csv was rotated since the offsets were stored: the lines go to the end of the new one."""
        at, offsets = st.st_size, []
        for r in lines:
            r.csv_at, r.csv_ino = at, st.st_ino
            offsets.append((at, st.st_ino, r.id))
            at += len(r.csv_line.encode("utf-8"))
        self.ledger.rebase(offsets)
        self.log.warning("verdicts.csv_replaced", file=str(self.csv.path),
                         note="renamed or deleted while running (a rotation?); new lines go to a new file")

    def _move_all(self, rows: list[Row]) -> list[tuple[tuple[str, ...], bool]]:
        """_move for each row, in a few parallel runs of rows: a move on one disk is two system calls,
        cheaper than a hand-off to a thread; a copy to another file system (with its fsync) is not."""
        size = max(1, -(-len(rows) // MOVE_RUNS))
        runs = [rows[i:i + size] for i in range(0, len(rows), size)]
        return [r for run in self.io.map(lambda run: [self._move(row) for row in run], runs) for r in run]

    def _move(self, row: Row) -> tuple[tuple[str, ...], bool]:
        """Moves (or deletes) the input of `row` if it still holds what was judged; returns the folders
        to sync, and whether it stayed because its bytes changed (or it was replaced) after judging."""
        src = os.path.join(self.folders.input, row.fingerprint.path)
        try:
            st = os.lstat(src)
            if moves.identity(row.fingerprint, src, st, any_inode=True) != moves.SAME:
                return (), True
            if not row.moved_to:
                os.unlink(src)
                return (os.path.dirname(src),), False
            moves.move(src, row.moved_to, st)
            return (os.path.dirname(src), os.path.dirname(row.moved_to)), False
        except FileNotFoundError:
            return (), False  # moved before a crash, or removed by someone
        except OSError as e:
            if problem(e, self.folders.output)[1]:
                raise  # no space: finish() is retried as a whole, after the disk has room again
            self.log.error("scan.move_failed", file=printable(row.fingerprint.path), reason=e.strerror or str(e),
                           note="the verdict is recorded; the file is moved when next seen")
            return (), False

    def _move_again(self, scans: list[Scan]) -> None:
        for s in scans:
            self.log.info("scan.skipped", file=s.shown,
                          reason=f"already has a verdict ({s.previous.name}); moving it out")
            self.counters.add(skipped=1)
        results = self._move_all([s.previous for s in scans])
        sync_folders({p for folders, _ in results for p in folders}, self.io)
        self._release(scans)

    # --- start-up -----------------------------------------------------------------------------
    def start_up(self) -> None:
        """Finishes what a killed process left, then checks verdicts.csv (retried while it fails)."""
        if self.recovered is None:
            self.recovered = self.recover()
            self.log.info("startup.recovered", **self.recovered)
        rotated = self.csv.open()
        if rotated:
            self.log.warning("verdicts.rotated", old=str(rotated), reason="the model's classes differ from its columns")

    def recover(self) -> dict:
        """Written rows are finished (and logged, as verdicts now complete); received rows whose file
        vanished or changed are dropped with their files."""
        finished, stayed = self.finish()
        for r in finished:
            self._log_outcome(r, printable(r.fingerprint.path), recovered=True)
        self._log_stayed(stayed)
        dropped = []
        for row in self.ledger.in_state("received"):
            src = self.folders.input / row.fingerprint.path
            try:
                if moves.identity(row.fingerprint, src, os.lstat(src)) == moves.SAME:
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
        return {"finished": len(finished), "abandoned": len(dropped)}
