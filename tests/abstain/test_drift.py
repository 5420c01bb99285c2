"""The abstention tracker: each abstention logged, the window's share, the alarm raised and cleared once."""
from __future__ import annotations

from tumord.abstain.drift import AbstentionTracker
from tumord.abstain.judge import Judgement


class Log:
    def __init__(self):
        self.events = []

    def warning(self, event, **kw):
        self.events.append((event, kw))

    info = warning


def judged(abstained: bool, distance: float = 0.5) -> Judgement:
    return Judgement(None, ["unlike the training scans"] if abstained else [], distance, 1.0, "knn")


def test_the_alarm_waits_for_enough_scans_rises_once_and_clears():
    log = Log()
    t = AbstentionTracker(window=10, alarm_share=0.3, min_scans=5, log=log)
    for _ in range(4):
        t.observe("x.png", judged(True, 2.0))
    assert not t.snapshot()["alarm"]  # 4 of 4 abstained, but fewer than min_scans seen
    t.observe("x.png", judged(True, 2.0))
    t.observe("x.png", judged(True, 2.0))
    alarms = [e for e, _ in log.events if e == "drift.alarm"]
    assert alarms == ["drift.alarm"] and t.snapshot()["mean_relative_distance"] == 2.0
    assert "DRIFT" in t.status() and "tumord feedback" in t.status()
    for _ in range(10):
        t.observe("y.png", judged(False))
    assert [e for e, _ in log.events if e.startswith("drift.")] == ["drift.alarm", "drift.cleared"]
    s = t.snapshot()
    assert s["abstained"] == 6 and s["share"] == 0.0 and s["window"] == 10
    assert t.status() == "abstained 6 (0% of the last 10; mean feature distance 0.50 of the threshold)"
    assert sum(e == "scan.abstained" for e, _ in log.events) == 6


def test_without_distances_the_status_gives_the_share_alone():
    t = AbstentionTracker(window=3, alarm_share=0.5, min_scans=3, log=Log())
    assert t.status() == "abstained 0 (0% of the last 0)"
    t.observe("old-model.png", Judgement(None, [], None, None, None))
    assert t.status() == "abstained 0 (0% of the last 1)"
