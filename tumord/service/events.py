"""What the service tells an onlooker as it works (the HTTP monitor in `tumord.web` listens).

The service calls these at a few fixed points, from its own threads; the default does nothing.
A listener must return quickly and never raise: it runs on the classification and commit path.
"""
from __future__ import annotations


class Events:
    def started(self, service) -> None:
        """The model is loaded, the observer runs and the workers are started."""

    def stopping(self) -> None:
        """SIGTERM/SIGINT or a dead component: the service drains and exits."""

    def batch_classified(self, scans: int, decode_seconds: list[float], predict_seconds: float,
                         waited_seconds: list[float]) -> None:
        """A batch was predicted: its size, each file's read+decode time, the prediction's time, and
        per predicted scan the time from its file being complete to its probabilities."""

    def scan_recorded(self, name: str, record: dict, outcome: str, latency_seconds: float) -> None:
        """`name`'s verdict (outcome "classified") or an error record ("failed") is durable and the input
        moved out; `record` is the JSON written, `latency_seconds` runs from the file being complete."""

    def model_swapped(self, old: dict, new: dict) -> None:
        """A hot swap replaced the serving model (identities: version, sha256)."""


NO_EVENTS = Events()
