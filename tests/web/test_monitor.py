"""The monitor's in-memory record: bounded, newest first, failures kept longer, ids forgotten with them."""
from tumord.web import monitor as monitor_module
from tumord.web.monitor import Monitor


def record(i: int, label: str = "tumor", failed: bool = False) -> dict:
    if failed:
        return {"file": f"f{i}.png", "error": f"f{i}.png is broken", "received_at": "2026-12-02T10:00:00.000Z"}
    return {"file": f"s{i}.png", "label": label, "confidence": 0.9, "probabilities": {label: 0.9},
            "model": {"version": "v1", "sha256": "0" * 64}, "verdict": f"s{i}.json",
            "received_at": "2026-12-02T10:00:00.000Z"}


def test_record_is_bounded_and_failures_outlive_verdicts(monkeypatch, tmp_path):
    monkeypatch.setattr(monitor_module, "KEEP", 3)
    monkeypatch.setattr(monitor_module, "KEEP_FAILED", 2)
    m = Monitor(tmp_path)
    m.scan_recorded("f0", record(0, failed=True), "failed", 0.1)
    m.scan_recorded("f1", record(1, failed=True), "failed", 0.1)
    for i in range(4):
        m.scan_recorded(f"s{i}", record(i, "normal" if i == 3 else "tumor"), "classified", 0.2)
    assert [v["id"] for v in m.verdicts()] == ["s3", "s2", "s1"]  # the newest 3, newest first
    assert [v["id"] for v in m.failed()] == ["f1", "f0"]  # gone from the verdicts, kept as failures
    assert m.find("f0") is not None and m.find("s0") is None  # s0 left both lists: forgotten
    m.scan_recorded("f2", record(2, failed=True), "failed", 0.1)
    assert m.find("f0") is None and [v["id"] for v in m.failed()] == ["f2", "f1"]
    assert set(m.by_id) == {"s2", "s3", "f1", "f2"}  # no id outlives its entry
    assert m.label_shares() == {"normal": 0.5, "tumor": 0.5}  # of the verdicts still kept
    assert [v["id"] for v in m.verdicts(since=5)] == ["f2", "s3"]
    assert sum(x.classified + x.failed for x in m.hour()) == 7 and len(m.hour()) == 60
