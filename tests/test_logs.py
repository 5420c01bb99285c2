"""Structured logging writes to the stderr of the moment."""
import io
import json
import sys

from tumord.logs import get_logger, setup_logging


def test_logs_follow_a_replaced_stderr(monkeypatch):
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    setup_logging(json_lines=True)
    log = get_logger("tumord.test")
    first.close()  # e.g. a test's captured stream, gone once that test ended
    monkeypatch.setattr(sys, "stderr", second)
    log.info("after.swap", n=1)
    event = json.loads(second.getvalue())
    assert event["event"] == "after.swap" and event["n"] == 1
