"""Wiring: folders, lock, ledger, model, the threads, signals, and one way to shut down.

    observer -> Intake -> ready -> Classify (+ decode pool) -> batches -> Commit
                                       ^ ModelSlot <- Swapper (pointer poll, SIGHUP)
    Pinger: READY / STATUS / WATCHDOG to systemd

SIGTERM and SIGINT: every worker is told to stop (Worker.stop, the one way): the observer and
intake stop (no new files), the classifier finishes its batch, the commit stage empties its
queue (or, while the disk refuses, gives up: those scans stay in input/), then exit 0. Files
still queued stay in input/ for the next start. A component that dies makes the service exit 1
so that systemd restarts it; a stage failing for `stall_seconds` stops the watchdog pings.
"""
from __future__ import annotations

import fcntl
import os
import queue
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from tumord.abstain.drift import AbstentionTracker
from tumord.abstain.judge import AbstainSettings
from tumord.atomic import sweep_temporaries
from tumord.config import ConfigError
from tumord.model.checkpoint import load
from tumord.model.registry import check_folder, current_model_path
from tumord.service.classify import Classify, Limits
from tumord.service.commit import Commit
from tumord.service.events import NO_EVENTS, Events
from tumord.service.intake import Intake
from tumord.service.judge_process import JudgeProcess
from tumord.service.ledger import Ledger
from tumord.service.notify import Notifier, Pinger, watchdog_interval
from tumord.service.records import Counters, Folders, Inflight
from tumord.service.series import Rule, SeriesTracker
from tumord.service.swap import ModelSlot, Swapper, check_model
from tumord.service.verdicts import CSV_NAME, VerdictCsv
from tumord.service.worker import problem

LEDGER_NAME = "ledger.sqlite3"
LOCK_NAME = ".tumord-watch.lock"


@dataclass
class Settings:
    input: Path
    output: Path
    archive: Path
    failed: Path
    models: Path
    model_file: Path | None
    recursive: bool
    observer: str
    poll_seconds: float
    settle_seconds: float
    stable_seconds: float
    rescan_seconds: float
    batch_size: int
    decode_threads: int
    predict_threads: int
    judge_process: bool
    max_pixels: int
    max_bytes: int
    delete_classified: bool
    model_poll_seconds: float
    stall_seconds: float
    drain_seconds: float
    explain: bool
    blas_threads: int
    temporary_names: list[str]
    retry_seconds: float
    abstain: AbstainSettings
    drift: tuple[int, float, int]  # abstain.drift_window, drift_share, drift_min_scans
    series_stable_seconds: float = 60.0
    series_rule: Rule = Rule("top_k_mean", 3)
    write_dicom_results: bool = False

    @classmethod
    def from_config(cls, cfg: dict, source: str, model_file: Path | None = None) -> "Settings":
        """From settings checked by tumord.config (types, bounds); checks and creates the folders.
        A problem is a ConfigError naming `source` and the key."""
        w, p, d = cfg["watch"], cfg["paths"], cfg["dicom"]
        if d["write_results"] and w["on_success"] == "delete":
            raise ConfigError(f"{source}: dicom.write_results = true needs watch.on_success = archive: the SR is "
                              "built from the archived instances")
        inp = Path(p["input"]).absolute()
        if inp.exists() and not inp.is_dir():  # a missing one is waited for (a mount not there yet)
            raise ConfigError(f"{source}: paths.input = {p['input']!r}: the input folder is not a folder ({inp})")
        out = Path(p["output"]).absolute()
        folders = {"paths.output": out, "watch.archive": out / w["archive"], "watch.failed": out / w["failed"]}
        real_in = os.path.realpath(inp)
        for key, folder in folders.items():
            real = os.path.realpath(folder)
            if real == real_in or (w["recursive"] and real.startswith(real_in + os.sep)):
                raise ConfigError(f"{source}: {key} = {str(folder)!r} is inside the input folder; "
                                  "the service would judge its own output")
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ConfigError(f"{source}: {key}: cannot create {folder} ({e.strerror})") from None
        return cls(
            input=inp, output=out, archive=folders["watch.archive"], failed=folders["watch.failed"],
            models=Path(p["models"]).absolute(), model_file=model_file, recursive=w["recursive"],
            observer=w["observer"], poll_seconds=w["poll_seconds"], settle_seconds=w["settle_seconds"],
            stable_seconds=w["stable_seconds"], rescan_seconds=w["rescan_seconds"], batch_size=w["batch_size"],
            decode_threads=w["decode_threads"], predict_threads=w["predict_threads"],
            judge_process=w["judge_process"], max_pixels=w["max_pixels"], max_bytes=w["max_bytes"],
            delete_classified=w["on_success"] == "delete", model_poll_seconds=w["model_poll_seconds"],
            stall_seconds=w["stall_seconds"], drain_seconds=w["drain_seconds"], explain=w["explain"],
            blas_threads=w["blas_threads"], temporary_names=w["temporary_names"], retry_seconds=w["retry_seconds"],
            abstain=AbstainSettings.from_config(cfg),
            drift=(cfg["abstain"]["drift_window"], cfg["abstain"]["drift_share"], cfg["abstain"]["drift_min_scans"]),
            series_stable_seconds=d["series_stable_seconds"], series_rule=Rule(d["series_rule"], d["series_top_k"]),
            write_dicom_results=d["write_results"],
        )


def dicom_results(s: Settings):
    """The writer of DICOM SR and secondary captures, when dicom.write_results asks for them."""
    if not s.write_dicom_results:
        return None
    from tumord.service.dicom_out import ResultWriter

    return ResultWriter(s.output / "dicom", s.output)


def limit_blas_threads(threads: int) -> int:
    """Caps the threads of every BLAS library loaded in this process (0: leave the default) and
    returns numpy's count. On few cores the network's threads and the decode and commit threads
    otherwise take turns badly (docs/benchmarks.md)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    if threads:
        threadpool_limits(threads, user_api="blas")  # for the whole process, not a with-block
    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    ours = [i for i in blas if "numpy" in i["filepath"]] or blas  # OpenCV may bring a BLAS of its own
    return ours[0]["num_threads"] if ours else 0


def native_observer():
    """inotify with full events on Linux (a move from outside is a move, i.e. a finished file, not a
    creation of a maybe empty one); elsewhere the platform's observer, where a move-in may look like a
    creation and waits the longer `stable` window."""
    try:
        from watchdog.observers.inotify import InotifyObserver
    except ImportError:
        return Observer()
    return InotifyObserver(generate_full_events=True)


class Service:
    def __init__(self, settings: Settings, log, events: Events = NO_EVENTS):
        self.s, self.log, self.events = settings, log, events
        self.stop_requested = threading.Event()
        self.counters = Counters()
        self.inflight = Inflight()
        self.notifier = Notifier()

    # --- start -------------------------------------------------------------------------------
    def _lock(self) -> None:
        self._lock_file = open(self.s.output / LOCK_NAME, "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{self.s.output}: another `tumord watch` is already writing to this output folder") \
                from None

    def start(self) -> None:
        s = self.s
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # bad files are logged by us, once
        self._lock()
        blas = limit_blas_threads(s.blas_threads)
        model = load(s.model_file if s.model_file is not None else current_model_path(s.models))
        if s.model_file is None:
            check_folder(model.path, model.identity["version"])
        check_model(model, None)
        self.slot = ModelSlot(model)
        for p in sweep_temporaries(s.output, s.archive, s.failed):
            self.log.info("startup.swept", file=str(p), reason="temporary file left by an interrupted run")
        self.ledger = self._open_ledger()
        self.csv = VerdictCsv(s.output / CSV_NAME, model.class_names)
        self.ready: queue.SimpleQueue = queue.SimpleQueue()  # C-implemented: a put and a get per scan
        self.batches: queue.Queue = queue.Queue(maxsize=2)  # backpressure when the disk is slow
        self.observer = PollingObserver(timeout=s.poll_seconds) if s.observer == "polling" else native_observer()
        self.observer.start()  # the intake watches the folder, then scans it: nothing falls between
        self.intake = Intake(s.input, recursive=s.recursive, settle=s.settle_seconds, stable=s.stable_seconds,
                             rescan_seconds=s.rescan_seconds, ready=self.ready, inflight=self.inflight, log=self.log,
                             observer=self.observer, writers=_reports_closes(self.observer),
                             temporary_names=s.temporary_names, retry_seconds=s.retry_seconds)
        folders = Folders(s.input, s.output, s.archive, s.failed, s.delete_classified)
        self.abstentions = AbstentionTracker(*s.drift, log=self.log)
        self.series = SeriesTracker(s.output, stable_seconds=s.series_stable_seconds, rule=s.series_rule,
                                    log=self.log, results=dicom_results(s),
                                    busy=lambda: self.intake.pending() + len(self.inflight) > 0)
        self.commit = Commit(batches=self.batches, ledger=self.ledger, csv=self.csv, folders=folders,
                             inflight=self.inflight, counters=self.counters, log=self.log,
                             abstentions=self.abstentions, series=self.series, events=self.events)
        limits = Limits(s.max_pixels, s.max_bytes, s.stable_seconds, s.retry_seconds, s.abstain)
        judge = JudgeProcess(s.input, limits, s.decode_threads, s.predict_threads, s.blas_threads, s.explain,
                             self.log) if s.judge_process else None
        self.classify = Classify(root=s.input, ready=self.ready, out=self.batches, slot=self.slot, ledger=self.ledger,
                                 limits=limits, judge=judge, batch_size=s.batch_size, threads=s.decode_threads,
                                 predict_threads=s.predict_threads,
                                 inflight=self.inflight, retry=self.intake.retry, log=self.log, explain=s.explain,
                                 after=self.commit.started, events=self.events)
        self.commit.upstream = self.classify
        if judge is not None:
            judge.start(model=model)  # before `ready`: the first scan does not wait for it
        self.swapper = Swapper(self.slot, models_dir=None if s.model_file else s.models, model_file=s.model_file,
                               poll_seconds=s.model_poll_seconds, log=self.log, events=self.events)
        for t in self._workers():  # commit first: it finishes what a killed run left before new batches
            t.start()
        self.pinger = Pinger(self.notifier, watchdog_interval(), self.healthy, self.status)
        self.pinger.start()
        self.notifier.send(READY=1, STATUS=self.status())
        self.events.started(self)
        self.log.info("service.ready", input=str(s.input), output=str(s.output), model=model.identity,
                      observer=s.observer, recursive=s.recursive, blas_threads=blas,
                      predict_threads=s.predict_threads, ledger=self.ledger.counts())

    def _open_ledger(self) -> Ledger:
        """The ledger, waited for while the disk is full (a new or migrated ledger needs space)."""
        delay = 0.25
        while True:
            try:
                return Ledger(self.s.output / LEDGER_NAME)
            except sqlite3.Error as e:
                reason, waiting = problem(e, self.s.output)
                if not waiting or self.stop_requested.is_set():
                    raise ConfigError(f"{self.s.output / LEDGER_NAME}: cannot open the ledger ({e})") from None
                self.log.error("output.waiting", reason=reason, step="opening the ledger", retry_in_s=delay)
                self.notifier.send(STATUS=f"starting: waiting, {reason}")
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    # --- health and status ---------------------------------------------------------------------
    def _workers(self) -> list:
        return [self.commit, self.classify, self.intake, self.swapper, self.series]

    def dead(self) -> list[str]:
        """Components whose thread has ended (the intake looks after the observer's watch itself)."""
        gone = [t.name for t in self._workers() if not t.is_alive()]
        if not self.observer.is_alive():
            gone.append("observer")
        return gone

    def healthy(self) -> bool:
        """Alive, not hung, and no stage failing for stall_seconds: what earns a systemd watchdog ping.
        Waiting for the world (space, the input folder) is healthy: a restart would not help."""
        now = time.monotonic()
        for t in self._workers():
            trouble = t.trouble()
            if now - t.heartbeat >= self.s.stall_seconds:
                return False
            if trouble is not None and not trouble.waiting and now - trouble.since >= self.s.stall_seconds:
                return False
        return not self.dead()

    def status(self) -> str:
        c = self.counters
        queued = self.intake.pending() + len(self.inflight)
        line = (f"classified {c.classified}, failed {c.failed}, skipped {c.skipped}, queued {queued}; "
                f"model {self.slot.model.identity['version']}; {self.abstentions.status()}")
        for t in self._workers():
            trouble = t.trouble()
            if trouble is not None:
                line += f"; {'waiting' if trouble.waiting else 'failing'}: {trouble.reason}"
        return line

    # --- run and stop -----------------------------------------------------------------------
    def run(self) -> int:
        """Serves until SIGTERM/SIGINT (exit 0) or a component dies (exit 1)."""
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        signal.signal(signal.SIGTERM, lambda *_: self.stop_requested.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop_requested.set())
        reload_asked = threading.Event()  # a SIGHUP while starting is kept, not fatal
        signal.signal(signal.SIGHUP, lambda *_: reload_asked.set())
        try:
            self.start()
            signal.signal(signal.SIGHUP, lambda *_: self.swapper.reload())
            if reload_asked.is_set():
                self.swapper.reload()
            code = 0
            while not self.stop_requested.wait(0.5):
                dead = self.dead()
                if dead:  # a hung (alive) thread is left to the systemd watchdog
                    self.log.error("service.component_died", components=dead)
                    code = 1
                    break
            return self.shutdown(code)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def shutdown(self, code: int = 0) -> int:
        deadline = time.monotonic() + self.s.drain_seconds
        self.notifier.send(STOPPING=1, STATUS="draining: finishing the scans in hand")
        self.events.stopping()
        self.log.info("service.stopping", in_flight=len(self.inflight))
        self.observer.stop()
        for t in self._workers():
            t.stop()
        for t in (self.observer, self.intake, self.classify, self.commit, self.series):
            t.join(max(0.0, deadline - time.monotonic()))
        drained = not self.commit.is_alive() and not self.classify.is_alive()
        if not drained:
            self.log.error("service.drain_timeout", seconds=self.s.drain_seconds,
                           note="unfinished scans are completed at the next start")
            code = code or 1
        else:
            self.ledger.close()
        self.pinger.stop()
        self.log.info("service.stopped", code=code, classified=self.counters.classified,
                      failed=self.counters.failed, skipped=self.counters.skipped)
        self.notifier.close()
        if not drained:  # a thread stuck in I/O would hold up interpreter exit; the ledger makes this safe
            os._exit(code)
        return code


def _reports_closes(observer) -> bool:
    """Whether the observer says when a file is closed after writing (Linux inotify)."""
    try:
        from watchdog.observers.inotify import InotifyObserver
    except ImportError:
        return False
    return isinstance(observer, InotifyObserver)
