"""The running service: verdicts say when the model abstained and why; STATUS counts them; drift alarm.

A real `tumord watch` process, a small CNN with an abstention reference, real files dropped in.
"""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import yaml

from tests.abstain.models import cnn_model, scans
from tests.service.conftest import Watch, csv_rows, drop, point, systemd_messages, verdicts


def encode(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


@pytest.fixture
def watch_cnn(tmp_path):
    made = []
    model = cnn_model(tmp_path / "cnn.npz")
    folder = tmp_path / "models" / "versions" / model.meta["version"]
    folder.mkdir(parents=True)
    (tmp_path / "cnn.npz").rename(folder / "model.npz")
    point(tmp_path / "models", model.meta["version"])

    def factory(abstain: dict | None = None, **kw) -> Watch:
        w = Watch(tmp_path, **kw)
        cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
        cfg["abstain"] = abstain or {}
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
        made.append(w)
        return w

    yield factory
    for w in made:
        w.kill()


def test_verdicts_say_whether_and_why_the_model_abstained(watch_cnn):
    w = watch_cnn().start()
    w.wait_for("service.ready")
    drop(w.input, "scan.png", encode(scans(1, 123)[0][0]))
    drop(w.input, "blank.png", encode(np.zeros((64, 64), np.uint8)))
    colour = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    drop(w.input, "photo.png", encode(colour))
    w.wait_for("scan.classified", 3)
    w.wait_for("scan.abstained", 2)
    assert w.stop() == 0
    by_file = {v["file"]: v for v in verdicts(w.output)}
    ok, blank, photo = by_file["scan.png"], by_file["blank.png"], by_file["photo.png"]
    assert ok["abstained"] is False and ok["abstain_reasons"] == []
    assert ok["feature_distance"]["value"] <= ok["feature_distance"]["threshold"]
    assert blank["abstained"] is True and blank["abstain_reasons"][0].startswith("blank or nearly constant")
    assert photo["abstained"] is True and photo["abstain_reasons"][0].startswith("a colour image")
    for v in (blank, photo):  # still judged: the probabilities are there
        assert set(v["probabilities"]) == {"normal", "tumor"} and v["label"] in ("normal", "tumor")
    rows = {r["file"]: r for r in csv_rows(w.output)}
    assert rows["scan.png"]["abstained"] == "no" and rows["blank.png"]["abstained"] == "yes"
    assert rows["blank.png"]["abstain_reasons"].startswith("blank or nearly constant")
    assert float(rows["scan.png"]["feature_distance"]) == ok["feature_distance"]["value"]
    logged = {e["file"]: e for e in w.events("scan.abstained")}
    assert set(logged) == {"blank.png", "photo.png"} and logged["blank.png"]["level"] == "warning"


def test_status_counts_abstentions_and_a_drift_alarm_says_what_to_do(watch_cnn):
    with systemd_messages() as (address, got):
        w = watch_cnn(abstain={"drift_window": 6, "drift_share": 0.5, "drift_min_scans": 4},
                      env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"}).start()
        w.wait_for("service.ready")
        noise = np.random.default_rng(2).integers(0, 256, (4, 64, 64), dtype=np.uint8)
        for i, img in enumerate(noise):
            drop(w.input, f"noise{i}.png", encode(img))
        w.wait_for("scan.abstained", 4)
        (alarm,) = w.wait_for("drift.alarm")
        time.sleep(0.6)
        assert w.stop() == 0
    assert alarm["level"] == "warning" and alarm["abstained_share"] == 1.0 and "tumord feedback" in alarm["advice"]
    status = [m for m in got if "STATUS=" in m]
    assert "abstained 0" in status[0]
    assert any("abstained 4 (100% of the last 4; mean feature distance" in m and "DRIFT" in m
               and "tumord feedback" in m for m in status)
