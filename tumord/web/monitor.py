"""What the HTTP server shows, kept in memory as the service reports it (see tumord.service.events).

The verdicts and errors of this run are kept newest last, at most KEEP of each, with a sequence
number for `?since=`; the last hour is kept per minute for the page's chart. Requests read only
this, never the output folder. Everything the server needs from the service itself (counters,
queue, health, serving model) is read in `snapshot()`, one place.
"""
from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tumord.service.events import Events
from tumord.web.metrics import Metrics

KEEP = 2000  # verdicts kept for the API and the page; older ones are in output/ and verdicts.csv
KEEP_FAILED = 200
RECENT = 500  # the label distribution (a drift signal) is taken over this many latest verdicts
MINUTES = 60


def utc_iso(t: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if t is None else t, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Minute:
    start: int  # Unix time of the minute's start
    classified: int = 0
    failed: int = 0
    latency_sum: float = 0.0


@dataclass(eq=False)
class Entry:
    seq: int
    id: str
    outcome: str  # classified or failed
    recorded_at: str
    record: dict  # the JSON the service wrote, as written
    latency_seconds: float
    heatmap: Path | None = field(default=None, repr=False)  # made by us, never from a request

    def public(self) -> dict:
        r = self.record
        out = {"seq": self.seq, "id": self.id, "outcome": self.outcome, "file": r.get("file"),
               "recorded_at": self.recorded_at, "received_at": r.get("received_at"),
               "latency_seconds": round(self.latency_seconds, 4)}
        if self.outcome == "classified":
            out.update(label=r["label"], confidence=r["confidence"], probabilities=r["probabilities"],
                       abstained=bool(r.get("abstained")), abstain_reasons=r.get("abstain_reasons", []),
                       model=r["model"]["version"], verdict=r["verdict"], heatmap=self.heatmap is not None)
        else:
            out.update(error=r.get("error"))
        return out


class Monitor(Events):
    def __init__(self, output: Path):
        self.output = output
        self.lock = threading.Lock()
        self.service = None
        self.phase = "starting"  # starting -> serving -> stopping
        self.started_at = utc_iso()
        self.seq = 0
        self.abstained = 0  # verdicts where the model abstained (the service counts them as classified)
        self.entries: deque[Entry] = deque(maxlen=KEEP)
        self.failures: deque[Entry] = deque(maxlen=KEEP_FAILED)
        self.by_id: dict[str, Entry] = {}
        self.minutes: deque[Minute] = deque(maxlen=MINUTES)
        self.serving_since = ""
        self._figures: dict[str, dict] = {}
        self.metrics = Metrics(self)

    # --- events, from the service's threads ----------------------------------------------------
    def started(self, service) -> None:
        with self.lock:
            self.service, self.phase, self.serving_since = service, "serving", utc_iso()

    def stopping(self) -> None:
        self.phase = "stopping"

    def batch_classified(self, scans, decode_seconds, predict_seconds, waited_seconds) -> None:
        self.metrics.batch(scans, decode_seconds, predict_seconds, waited_seconds)

    def scan_recorded(self, name: str, record: dict, outcome: str, latency_seconds: float) -> None:
        heatmap = self.output / record["explanation"] if record.get("explanation") else None
        now = time.time()
        with self.lock:
            self.seq += 1
            entry = Entry(self.seq, name, outcome, utc_iso(now), record, latency_seconds, heatmap)
            evicted = [self.entries[0]] if len(self.entries) == KEEP else []
            self.entries.append(entry)
            if outcome == "failed":
                evicted += [self.failures[0]] if len(self.failures) == KEEP_FAILED else []
                self.failures.append(entry)
            self.by_id[name] = entry
            self.abstained += bool(outcome == "classified" and record.get("abstained"))
            for old in evicted:
                if not self._kept(old) and self.by_id.get(old.id) is old:
                    del self.by_id[old.id]
            minute = self._minute(int(now // 60) * 60)
            if outcome == "classified":
                minute.classified += 1
            else:
                minute.failed += 1
            minute.latency_sum += latency_seconds
        self.metrics.recorded(record.get("label") if outcome == "classified" else None, latency_seconds)

    def model_swapped(self, old: dict, new: dict) -> None:
        self.serving_since = utc_iso()
        self.metrics.swapped()

    def _kept(self, entry: Entry) -> bool:
        """Still in either list (both are in sequence order, so the oldest kept tells)."""
        in_entries = bool(self.entries) and entry.seq >= self.entries[0].seq
        in_failures = entry.outcome == "failed" and bool(self.failures) and entry.seq >= self.failures[0].seq
        return in_entries or in_failures

    def _minute(self, start: int) -> Minute:
        if not self.minutes or self.minutes[-1].start != start:
            self.minutes.append(Minute(start))
        return self.minutes[-1]

    # --- reads, from the HTTP threads ----------------------------------------------------------
    def ready(self) -> tuple[bool, str]:
        """Ready: the model is loaded, the observer runs, and no worker is dead or stalled."""
        service = self.service
        if self.phase == "starting" or service is None:
            return False, "starting: loading the model and watching the input folder"
        if self.phase == "stopping":
            return False, "stopping: draining the scans in hand"
        if not service.healthy():
            return False, "stalled: " + service.status()
        return True, service.status()

    def verdicts(self, since: int | None = None, since_time: str | None = None, limit: int = 50) -> list[dict]:
        """Newest first; `since` a sequence number, `since_time` an ISO 8601 UTC time (both exclusive)."""
        with self.lock:
            entries = list(self.entries)
        out = []
        for e in reversed(entries):
            if (since is not None and e.seq <= since) or (since_time is not None and e.recorded_at <= since_time):
                break
            out.append(e.public())
            if len(out) >= limit:
                break
        return out

    def find(self, entry_id: str) -> Entry | None:
        with self.lock:
            return self.by_id.get(entry_id)

    def failed(self, limit: int = 20) -> list[dict]:
        with self.lock:
            return [e.public() for e in reversed(list(self.failures))][:limit]

    def label_shares(self) -> dict[str, float]:
        with self.lock:
            labels = [e.record["label"] for e in reversed(self.entries) if e.outcome == "classified"][:RECENT]
        counts = Counter(labels)
        return {label: n / len(labels) for label, n in sorted(counts.items())}

    def hour(self) -> list[Minute]:
        """The last 60 minutes, oldest first, with empty minutes filled in."""
        now = int(time.time() // 60) * 60
        with self.lock:
            have = {m.start: m for m in self.minutes}
        return [have.get(t, Minute(t)) for t in range(now - 60 * (MINUTES - 1), now + 1, 60)]

    def _test_figures(self, model) -> dict:
        key = model.identity["sha256"]
        if key not in self._figures:  # read once per model, not per request
            self._figures[key] = test_figures(model)
        return self._figures[key]

    def snapshot(self) -> dict:
        """Counters, queue and serving model, read from the service (empty before it started)."""
        service = self.service
        ready, why = self.ready()
        snap = {"ready": ready, "status": why, "phase": self.phase, "started_at": self.started_at,
                "counts": {"classified": 0, "abstained": 0, "failed": 0, "skipped": 0}, "queued": 0, "model": None}
        if service is None:
            return snap
        c = service.counters
        snap["counts"] = {"classified": c.classified - self.abstained, "abstained": self.abstained,
                          "failed": c.failed, "skipped": c.skipped}
        snap["queued"] = service.intake.pending() + len(service.inflight)
        model = service.slot.model
        snap["model"] = {**model.identity, "created_at": model.meta.get("created_at"),
                         "serving_since": self.serving_since, "test": self._test_figures(model),
                         "promoted_at": promoted_at(service.s.models, model.identity["version"])
                         if service.s.model_file is None else None}
        return snap


def test_figures(model) -> dict:
    """The model's held-out test figures: its version folder's report.json, else its own metadata."""
    test = {}
    if model.path is not None:
        try:
            test = json.loads((Path(model.path).parent / "report.json").read_text()).get("test") or {}
        except (OSError, ValueError):
            pass
    test = test or model.meta.get("metrics", {}).get("test") or {}
    return {k: test[k] for k in ("accuracy", "sensitivity", "specificity", "auc", "n") if k in test}


def promoted_at(models: Path, version: str) -> str | None:
    """When models/current.json last changed, if it names `version` (the registry keeps no other date)."""
    pointer = models / "current.json"
    try:
        if json.loads(pointer.read_text()).get("current") == version:
            return utc_iso(pointer.stat().st_mtime)
    except (OSError, ValueError):
        pass
    return None
