"""Abstentions over the last N scans: each one logged, counted, and a drift alarm past a share.

A site whose scans the model does not know (another scanner, sequence or population) shows as a
rising share of abstentions and a rising mean feature distance. Past `alarm_share` (after at
least `min_scans` scans) the service warns once in the log and keeps saying so in STATUS until
the share falls back, with what to do about it.
"""
from __future__ import annotations

import threading
from collections import deque

ADVICE = ("label some of these scans with `tumord feedback VERDICT --label CLASS` "
          "(`tumord review` lists the most useful ones); the next `tumord train` adapts to them")


class AbstentionTracker:
    def __init__(self, window: int, alarm_share: float, min_scans: int, log):
        self.recent: deque[tuple[bool, float | None]] = deque(maxlen=window)
        self.alarm_share, self.min_scans, self.log = alarm_share, min(min_scans, window), log
        self.abstained = 0
        self.in_window = 0  # abstentions among `recent`, kept as scans come and go (not summed per scan)
        self.alarm = False
        self.lock = threading.Lock()

    def observe(self, file: str, judgement) -> None:
        """After a scan's verdict is durable: log an abstention, update the window, raise or clear the alarm."""
        if judgement.abstained:
            self.log.warning("scan.abstained", file=file, reasons=judgement.reasons,
                             feature_distance=judgement.distance, threshold=judgement.threshold)
        with self.lock:
            self.abstained += judgement.abstained
            if len(self.recent) == self.recent.maxlen:
                self.in_window -= self.recent[0][0]  # about to leave the window
            self.recent.append((judgement.abstained, judgement.relative_distance))
            self.in_window += judgement.abstained
            share = self.in_window / len(self.recent)
            was, self.alarm = self.alarm, len(self.recent) >= self.min_scans and share > self.alarm_share
            mean = self._mean() if self.alarm != was else None  # only an alarm's log line needs it
        if self.alarm and not was:
            self.log.warning("drift.alarm", abstained_share=round(share, 3), scans=len(self.recent),
                             mean_relative_distance=mean, alarm_share=self.alarm_share, advice=ADVICE)
        elif was and not self.alarm:
            self.log.info("drift.cleared", abstained_share=round(share, 3), scans=len(self.recent))

    def _window(self) -> tuple[float, float | None]:
        if not self.recent:
            return 0.0, None
        return self.in_window / len(self.recent), self._mean()

    def _mean(self) -> float | None:
        d = [r for _, r in self.recent if r is not None]
        return round(sum(d) / len(d), 3) if d else None

    def snapshot(self) -> dict:
        with self.lock:
            share, mean = self._window()
            return {"abstained": self.abstained, "window": len(self.recent), "share": share,
                    "mean_relative_distance": mean, "alarm": self.alarm}

    def status(self) -> str:
        """The STATUS fragment: 'abstained 3 (2% of the last 150; mean feature distance 0.41 of the
        threshold)' and, when raised, the alarm."""
        s = self.snapshot()
        distance = ("" if s["mean_relative_distance"] is None
                    else f"; mean feature distance {s['mean_relative_distance']:.2f} of the threshold")
        text = f"abstained {s['abstained']} ({s['share']:.0%} of the last {s['window']}{distance})"
        if s["alarm"]:
            text += (f"; DRIFT: {s['share']:.0%} of recent scans are unlike the training data "
                     f"(alarm above {self.alarm_share:.0%}): {ADVICE}")
        return text
