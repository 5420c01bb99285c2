"""Model hot swap, off the classification path.

A swapper thread polls models/current.json (content and mtime, every `poll_seconds`) and wakes
at once on SIGHUP. It loads the new model and checks it (its weights' SHA-256 on load, then a
trial prediction, and the same class names as the serving model, because verdicts.csv has one
column per class). Only then does it replace `ModelSlot.model`; the classifier reads that slot
once per batch, so a swap lands between batches and every verdict names the model that made it.
A model that fails any check is refused and logged; the old one keeps serving.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from tumord.model import checkpoint
from tumord.model.checkpoint import CheckpointError, Classifier
from tumord.model.registry import POINTER, check_folder, current_model_path
from tumord.service.events import NO_EVENTS
from tumord.service.worker import Worker


def check_model(new: Classifier, old: Classifier | None) -> None:
    """Raises CheckpointError when `new` cannot replace `old`."""
    if old is not None and list(new.class_names) != list(old.class_names):
        raise CheckpointError(f"{new.path}: classes {new.class_names} differ from the serving model's "
                              f"{old.class_names}; restart the service to change the class set")
    size = new.preprocess.size
    probe = np.stack([np.zeros((size, size), np.uint8), np.full((size, size), 128, np.uint8)])
    try:
        probs = new.predict(probe)
    except Exception as e:  # any failure here means the model is unusable
        raise CheckpointError(f"{new.path}: a trial prediction failed ({type(e).__name__}: {e})") from e
    if probs.shape != (2, len(new.class_names)) or not np.all(np.isfinite(probs)):
        raise CheckpointError(f"{new.path}: a trial prediction gave unusable output (shape {probs.shape})")


class ModelSlot:
    """The serving model; one reference, replaced whole."""

    def __init__(self, model: Classifier):
        self.model = model


class Swapper(Worker):
    def __init__(self, slot: ModelSlot, *, models_dir: Path | None, model_file: Path | None,
                 poll_seconds: float, log, events=NO_EVENTS):
        super().__init__("swapper")
        self.slot, self.models_dir, self.model_file = slot, models_dir, model_file
        self.poll_seconds, self.log, self.events = poll_seconds, log, events
        self.wake = threading.Event()
        self._seen = self._pointer_state()

    def reload(self) -> None:
        """SIGHUP: look again now, even if the pointer did not change."""
        self.wake.set()

    def stop(self) -> None:
        super().stop()
        self.wake.set()

    def _pointer_state(self):
        if self.models_dir is None:
            return None
        pointer = self.models_dir / POINTER
        try:
            return pointer.stat().st_mtime_ns, pointer.read_bytes()
        except OSError:
            return None

    def run(self) -> None:
        while not self.stopping.is_set():
            asked = self.wake.wait(self.poll_seconds)
            if asked:  # cleared only when seen: a reload() just after a timed-out wait is not lost
                self.wake.clear()
            self.beat()
            if self.stopping.is_set():
                break
            state = self._pointer_state()
            if asked or state != self._seen:
                self._seen = state
                self.try_swap("reload requested (SIGHUP)" if asked else "models/current.json changed")

    def try_swap(self, reason: str) -> bool:
        old = self.slot.model
        try:
            path = self.model_file if self.model_file is not None else current_model_path(self.models_dir)
            new = checkpoint.load(path)
            if self.model_file is None:
                check_folder(path, new.identity["version"])
            if new.identity == old.identity:
                self.log.info("model.unchanged", reason=reason, version=old.identity["version"])
                return False
            check_model(new, old)
        except Exception as e:  # CheckpointError, or anything else a broken file provokes
            self.log.error("model.refused", reason=str(e), serving=old.identity["version"])
            return False
        self.slot.model = new
        self.log.info("model.swapped", reason=reason, old=old.identity, new=new.identity, file=str(path))
        self.events.model_swapped(old.identity, new.identity)
        return True
