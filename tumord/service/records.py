"""What the service's stages hand each other and share: records only, so that stages import this
and not each other.

    Intake --Ready--> Classify --Batch of Scans--> Commit --Verdict--> ledger, files, verdicts.csv

Shared: `Inflight` (paths handed on and not yet out of the input folder), `Counters` (for
STATUS), `Folders` (where things go).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tumord.abstain.judge import Judgement
from tumord.data.dicom import DicomInfo
from tumord.judge.record import printable, utc_now  # noqa: F401 (shared with batch; the stages import them from here)
from tumord.model.checkpoint import Classifier
from tumord.service.ledger import Fingerprint, Row


@dataclass
class Ready:
    """A complete file, handed to the classifier."""

    path: str
    received_at: str  # UTC ISO 8601, when the file was found complete
    ready_at: float  # time.monotonic() of the same moment, for latency
    retrying_since: float | None = None  # time.monotonic() of its first failed attempt, when retried


@dataclass(eq=False)
class Scan:
    ready: Ready
    rel: str  # path relative to the input folder (may hold undecodable bytes as surrogates)
    fingerprint: Fingerprint | None = None
    image: np.ndarray | None = None
    error: str | None = None  # why it failed, in words for a person
    advice: str | None = None  # what the person can do about it, when there is something
    retry: str | None = None  # why it is not judged yet and is tried again later (not a failure)
    changed: bool = False  # modified while being read: not complete after all
    previous: Row | None = None  # its row from an earlier attempt, if any
    replaces: str | None = None  # the verdict of the same file before its bytes changed, if any
    probabilities: np.ndarray | None = None
    classified_at: str = ""
    explanation: bytes | None = None  # heat-map PNG, when the service is asked to explain
    check_reasons: list[str] = field(default_factory=list)  # input checks failed: reasons to abstain
    judgement: Judgement | None = None  # probabilities and whether the model abstained
    dicom: DicomInfo | None = None  # a DICOM instance's identifiers; its image is then (frames, H, W)
    slice_probabilities: np.ndarray | None = None  # DICOM: one row per frame
    frame_reasons: list[list[str]] | None = None  # DICOM: the input checks' reasons per frame
    decode_seconds: float = 0.0  # reading, checking, decoding and resizing it
    taken_at: float = 0.0  # time.monotonic() when the classifier took it from the queue
    judged_at: float = 0.0  # time.monotonic() when its batch was predicted
    record: dict | None = None  # the verdict or error JSON written for it (for service events)

    @property
    def path(self) -> str:
        return self.ready.path

    @property
    def shown(self) -> str:
        """The relative path as verdicts, errors and logs report it."""
        return printable(self.rel)

    def stages_ms(self, commit_started: float, done: float) -> dict[str, float]:
        """Where its time went from found complete to durable: waiting to be taken, decoding (within
        classify, which also waits for the batch's other scans and predicts), waiting for the commit
        stage, and committing (verdict file, ledger, CSV, move, with the fsyncs)."""
        r = self.ready.ready_at
        return {k: round(max(v, 0.0) * 1000, 1) for k, v in (
            ("queued", self.taken_at - r), ("decode", self.decode_seconds),
            ("classify", self.judged_at - self.taken_at), ("to_commit", commit_started - self.judged_at),
            ("commit", done - commit_started))}

    @property
    def already_done(self) -> bool:
        """Judged and recorded before; only its move out of the folder is left."""
        return self.previous is not None and self.previous.state == "done"


@dataclass
class Batch:
    model: Classifier
    scans: list[Scan] = field(default_factory=list)


@dataclass
class Verdict:
    """The outcome of one scan as the ledger stores it; the JSON file says more (commit.py)."""

    id: int  # its ledger row
    name: str  # <name>.json, archived as <name><suffix>
    outcome: str  # classified or failed
    moved_to: str  # where the input goes ('' when deleted)
    label: str | None = None
    error: str | None = None
    model: str | None = None  # version of the model that classified it
    csv_line: str | None = None
    csv_at: int | None = None  # byte offset of its line in verdicts.csv ...
    csv_ino: int | None = None  # ... in the file with this inode (a rotated file is never written again)


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
