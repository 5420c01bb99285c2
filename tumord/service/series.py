"""Series verdicts: the slices of one SeriesInstanceUID judged together once the series is complete.

A series is complete when no instance of it has been recorded for `dicom.series_stable_seconds`
(mercure and Orthanc wait 60 s by default). Its verdict goes to `output/series/<SeriesUID>.json`
(atomic; rewritten, never duplicated, if the series is completed again after a crash or a late
instance: `revision` counts the versions).

The rule (docs/dicom.md has the measurement): a slice's tumor probability is 1 - P(negative class);
`top_k_mean` (the default, k=3) gives the series the mean of its k highest, `max` the highest.
Tumor when that is at least 0.5, and then the tumor class most probable on the driving slices.
Not the mean over all slices: a tumor shows on a few slices of dozens and a mean dilutes it away.
`max` catches a tumor seen on a single slice, but every normal slice is a chance of a false alarm:
on synthetic series of the project's held-out scans its series false-alarm rate was 2 to 3 times
the per-slice rate at 10-40 slices, about twice that of the top-3 mean, which still found every
series with 3 tumor slices. Without a negative class among the model's classes the series takes
the class of highest mean probability.
"""
from __future__ import annotations

import time
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tumord import __version__
from tumord.atomic import write_atomic
from tumord.service.records import utc_now
from tumord.service.series_store import Instance, SeriesStore
from tumord.service.verdicts import to_json
from tumord.service.worker import Worker, problem

NEGATIVE_NAMES = ("normal", "notumor", "no_tumor", "healthy")
RULES = ("max", "top_k_mean")
SERIES_DB = "series.sqlite3"
SERIES_FOLDER = "series"


@dataclass(frozen=True)
class Rule:
    name: str = "max"
    top_k: int = 3

    def describe(self) -> str:
        if self.name == "max":
            return "highest tumor probability (1 - P(negative class)) over the series' slices; tumor if >= 0.5"
        return f"mean of the {self.top_k} highest slice tumor probabilities; tumor if >= 0.5"


def negative_index(class_names: list[str]) -> int | None:
    return next((class_names.index(n) for n in NEGATIVE_NAMES if n in class_names), None)


def combine(slices: np.ndarray, class_names: list[str], rule: Rule) -> tuple[str, float | None, np.ndarray]:
    """(label, series tumor probability or None, indices of the driving slices, strongest first)."""
    slices = np.asarray(slices, np.float64)
    neg = negative_index(class_names)
    if neg is None:
        mean = slices.mean(axis=0)
        label = int(mean.argmax())
        return class_names[label], None, np.argsort(-slices[:, label], kind="stable")[:1]
    tumor = 1.0 - slices[:, neg]
    order = np.argsort(-tumor, kind="stable")
    driving = order[:1] if rule.name == "max" else order[: min(rule.top_k, len(order))]
    score = float(tumor[driving].mean())
    if score < 0.5:
        return class_names[neg], score, driving
    others = slices[driving].mean(axis=0)
    others[neg] = -1.0
    return class_names[int(others.argmax())], score, driving


def instance_probabilities(frames: np.ndarray, class_names: list[str]) -> tuple[int, np.ndarray]:
    """A multi-frame instance's own verdict: its frame of highest tumor probability (the `max` rule)."""
    _, _, driving = combine(frames, class_names, Rule("max"))
    return int(driving[0]), frames[int(driving[0])]


def instance_fields(scan, class_names: list[str]) -> dict:
    """What a DICOM instance's verdict adds: its identifiers and, for several frames, each frame's verdict."""
    if scan.dicom is None:
        return {}
    fields = {"dicom": scan.dicom.to_dict()}
    if len(scan.slice_probabilities) > 1:
        fields["frames"] = [{"frame": k + 1, "label": class_names[int(p.argmax())],
                             "probabilities": {c: round(float(v), 6) for c, v in zip(class_names, p)}}
                            for k, p in enumerate(scan.slice_probabilities)]
    return fields


class SeriesTracker(Worker):
    """Notes classified DICOM instances (from the commit thread) and completes quiet series."""

    def __init__(self, output: Path, *, stable_seconds: float, rule: Rule, log, results=None, busy=None):
        super().__init__("series")
        self.folder = Path(output) / SERIES_FOLDER
        self.store = SeriesStore(Path(output) / SERIES_DB)
        self.stable_seconds, self.rule, self.log = stable_seconds, rule, log
        self.results = results  # writes the DICOM SR and secondary capture, when asked to
        # files found but not yet judged may belong to a due series (a backlog after a restart or
        # a burst): series wait until the pipeline is empty
        self.busy = busy or (lambda: False)

    def note(self, scan, record: dict) -> None:
        """A classified DICOM scan, from the commit thread, right after its verdict file is durable."""
        self.note_many([(scan, record)])

    def note_many(self, items) -> None:
        instances = []
        for scan, record in items:
            d = scan.dicom
            instances.append(Instance(
                series=d.series_instance_uid, sop=d.sop_instance_uid, study=d.study_instance_uid,
                number=d.instance_number, modality=d.modality, description=d.series_description,
                verdict=record["verdict"], archived=record["archived_as"], explanation=record.get("explanation", ""),
                model=record["model"], classes=list(record["probabilities"]),
                slices=[[round(float(v), 6) for v in row] for row in scan.slice_probabilities]))
        if instances:
            self.store.add(instances, time.time())

    def pending(self) -> int:
        return self.store.open_count()

    def run(self) -> None:
        reopened = self.store.restart_windows(time.time())
        if reopened:
            self.log.info("series.waiting", open=reopened, seconds=self.stable_seconds,
                          reason="restarted: their next instances may still be in the input folder")
        try:
            while not self.stopping.wait(min(1.0, self.stable_seconds / 4)):
                self.beat()
                self.complete_due()
        finally:
            self.store.close()

    def complete_due(self) -> list[Path]:
        written = []
        if self.busy():
            return written
        for uid in self.store.due(time.time(), self.stable_seconds):
            if self.stopping.is_set():
                break
            try:
                written.append(self.complete(uid))
            except (OSError, sqlite3.Error) as e:  # e.g. a full disk: the series stays open and is tried again
                reason, waiting = problem(e, self.folder)
                if self.report(reason, waiting):
                    self.log.error("series.write_failed", series=uid, reason=reason)
                return written
        if self.resolved() is not None:
            self.log.info("series.writing_again")
        return written

    def complete(self, uid: str) -> Path:
        seen = self.store.last_arrival(uid)
        output = self.folder.parent
        # a verdict dropped by crash recovery (its file vanished) does not count
        instances = [i for i in self.store.instances(uid) if (output / i.verdict).exists()]
        record = self.verdict(uid, instances)
        if self.results is not None and instances:
            try:
                record["dicom_results"] = self.results(record, instances)
            except Exception as e:  # a source that highdicom rejects must not stop series verdicts
                record["dicom_results"] = {"error": f"{type(e).__name__}: {e}"}
                self.log.error("series.dicom_results_failed", series=uid, reason=record["dicom_results"]["error"])
        self.folder.mkdir(exist_ok=True)
        path = self.folder / f"{safe_uid(uid)}.json"
        write_atomic(path, to_json(record))
        self.store.mark_done(uid, seen)
        self.log.info("series.classified", series=uid, label=record["label"],
                      tumor_probability=record["tumor_probability"], slices=record["slices"],
                      instances=record["instances"], verdict=f"{SERIES_FOLDER}/{path.name}")
        return path

    def verdict(self, uid: str, instances: list[Instance]) -> dict:
        classes = instances[-1].classes if instances else []
        used = [i for i in instances if i.classes == classes]  # a model with other classes cannot be combined
        rows = [(i, k, p) for i in used for k, p in enumerate(i.slices)]
        label, score, driving = combine(np.array([p for *_, p in rows]), classes, self.rule) if rows \
            else ("", None, [])
        neg = negative_index(classes)
        first = instances[0] if instances else None
        return {
            "series_instance_uid": uid,
            "study_instance_uid": first.study if first else "",
            "modality": first.modality if first else "",
            "series_description": first.description if first else "",
            "label": label,
            "tumor_probability": None if score is None else round(score, 6),
            "rule": {"name": self.rule.name, **({"top_k": self.rule.top_k} if self.rule.name != "max" else {}),
                     "text": self.rule.describe()},
            "driving_slices": [{
                "sop_instance_uid": rows[j][0].sop, "instance_number": rows[j][0].number, "frame": rows[j][1] + 1,
                "tumor_probability": None if neg is None else round(1 - rows[j][2][neg], 6),
                "verdict": rows[j][0].verdict} for j in driving],
            "slices": len(rows),
            "instances": len(used),
            "left_out": [{"verdict": i.verdict, "reason": "judged by a model with other classes"}
                         for i in instances if i not in used],
            "instance_verdicts": [i.verdict for i in used],
            "models": _unique([i.model for i in used]),
            "series_stable_seconds": self.stable_seconds,
            "completed_at": utc_now(),
            "revision": self.store.revision(uid) + 1,
            "tumord_version": __version__,
        }


def safe_uid(uid: str) -> str:
    """A UID as a file name: digits and dots are all a valid UID has; anything else is replaced."""
    return "".join(c if c.isdigit() or c == "." else "_" for c in uid)[:64] or "unknown"


def _unique(items: list[dict]) -> list[dict]:
    out = []
    for i in items:
        if i not in out:
            out.append(i)
    return out


