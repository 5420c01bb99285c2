"""`tumord receive` with a real DICOM client (pynetdicom's echoscu and storescu apps, in their own
processes) on 127.0.0.1, and `tumord watch` classifying what it stores: exactly one verdict per
instance and one per series, across a kill -9 of either process."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pydicom
from pydicom.uid import generate_uid

from tests.dicom.synth import PHI, bundled, series, write
from tests.dicom.test_watch_dicom import head
from tests.service.conftest import REPO, verdicts

BUNDLED = ["MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"]
SERIES_ARGS = ["--set", "dicom.series_stable_seconds=2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receive:
    """`tumord receive` as a child process; its JSON log lines are collected."""

    def __init__(self, root, port):
        self.root, self.port, self.lines = root, port, []
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("NOTIFY_SOCKET", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tumord.cli", "receive", "--host", "127.0.0.1", "--port", str(port), "--log-json",
             "--input", str(root / "input"), "--output", str(root / "output")],
            cwd=root, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                self.lines.append({"event": "raw", "text": line})

    def events(self, name):
        return [r for r in self.lines if r.get("event") == name]

    def wait_for(self, name, count=1, timeout=30.0):
        deadline = time.monotonic() + timeout
        while len(self.events(name)) < count:
            assert time.monotonic() < deadline and self.proc.poll() is None, (name, self.lines[-10:])
            time.sleep(0.02)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            assert self.proc.wait(10) == 0


def scu(app, port, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "pynetdicom", app, "127.0.0.1", str(port), *args,
                           "-aec", "TUMORD"], capture_output=True, text=True, timeout=timeout)


def make_study(folder, rng, slices=6):
    """A synthetic series, and pydicom's bundled MR instance in four encodings, each given a SOP
    Instance UID of its own (the encoded pixel data is kept as it is)."""
    folder.mkdir()
    uid = generate_uid()
    for k, ds in enumerate(series([head(rng, k == 3) for k in range(slices)], series=uid)):
        write(ds, folder / f"s{k:02d}.dcm")
    for name in BUNDLED:
        ds = pydicom.dcmread(bundled(name))
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / name)
    return uid


def test_echo_and_store_then_watch_classifies_each_instance_once(service, rng, tmp_path):
    port = free_port()
    w = service(args=SERIES_ARGS).start()
    rx = Receive(tmp_path, port)
    try:
        rx.wait_for("receive.ready")
        echo = scu("echoscu", port)
        assert echo.returncode == 0, echo.stderr
        uid = make_study(tmp_path / "send", rng)
        sent = scu("storescu", port, str(tmp_path / "send"), "-r", "-cx")  # each file in its own encoding
        assert sent.returncode == 0, sent.stderr
        rx.wait_for("association.released", 2)
        stored = rx.events("instance.stored")
        assert len({e["sop_instance_uid"] for e in stored}) == len(stored) == 10
        assert {e["transfer_syntax"] for e in stored} == {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5",
                                                         "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.80"}
        assert [e["calling_ae"] for e in rx.events("association.accepted")] == ["ECHOSCU", "STORESCU"]
        w.wait_for("scan.classified", len(stored))
        w.wait_for("series.classified", 2, timeout=30)
        got = verdicts(w.output)
        assert len(got) == len(stored) and all(v["dicom"]["modality"] == "MR" for v in got)
        bundled_probs = [v["probabilities"] for v in got if v["dicom"]["series_description"] != "T1 AX POST"]
        assert len(bundled_probs) == 4 and all(p == bundled_probs[0] for p in bundled_probs)
        # the same instance again, in another encoding: answered Success, not stored a second time
        again = scu("storescu", port, str(tmp_path / "send" / "MR_small_RLE.dcm"), "-cx")
        assert again.returncode == 0, again.stderr
        rx.wait_for("instance.duplicate")
        assert rx.events("instance.duplicate")[0]["identical"] is True
        logged = json.dumps(rx.lines)
        assert not [v for v in PHI.values() if v in logged or v.split("^")[0] in logged]
        s = json.loads((w.output / "series" / f"{uid}.json").read_text())
        assert s["instances"] == 6 and s["slices"] == 6
        # nothing half-written or left behind; staged files never reached the watch service's view
        assert [p.name for p in w.input.iterdir()] == [".tumord-receiving"]
        assert not list((w.input / ".tumord-receiving").iterdir())
        assert not [e for e in w.events("file.skipped") if ".dcm" in e["file"]]
    finally:
        rx.close()
    assert w.stop() == 0


def _count_by_sop(output):
    by = {}
    for v in verdicts(output):
        by.setdefault(v["dicom"]["sop_instance_uid"], []).append(v)
    return by


def test_kill_9_of_the_receiver_mid_transfer_then_resend_gives_one_verdict_per_instance(service, rng, tmp_path):
    port = free_port()
    w = service(args=SERIES_ARGS).start()
    folder = tmp_path / "send"
    folder.mkdir()
    uid = generate_uid()
    datasets = series([head(rng, k % 7 == 3) for k in range(40)], series=uid)
    for k, ds in enumerate(datasets):
        write(ds, folder / f"s{k:02d}.dcm")
    rx = Receive(tmp_path, port)
    rx.wait_for("receive.ready")
    sender = subprocess.Popen([sys.executable, "-m", "pynetdicom", "storescu", "127.0.0.1", str(port), str(folder),
                               "-aec", "TUMORD"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rx.wait_for("instance.stored", 5)
    rx.proc.send_signal(signal.SIGKILL)
    rx.proc.wait(10)
    sender.wait(60)
    first = len(rx.events("instance.stored"))
    assert first < 40, "the transfer finished before the kill; the test proves nothing"
    # the series goes quiet while the receiver is down and is judged on what had arrived
    w.wait_until(lambda: w.events("series.classified"), what="the partial series judged")
    # a sender retries everything it is not sure of: here, the whole series
    rx = Receive(tmp_path, port)
    try:
        rx.wait_for("receive.ready")
        again = scu("storescu", port, str(folder))
        assert again.returncode == 0, again.stderr
        rx.wait_for("association.released")
        dup = len(rx.events("instance.duplicate"))
        assert dup >= first - 1 and dup + len(rx.events("instance.stored")) == 40
    finally:
        rx.close()
    # the rest reopens the judged series, and its one verdict file is rewritten as a new revision
    w.wait_until(lambda: any(e["instances"] == 40 for e in w.events("series.classified")), what="40-slice series")
    by = _count_by_sop(w.output)
    assert sorted(by) == sorted(ds.SOPInstanceUID for ds in datasets)
    extra = {k: len(v) for k, v in by.items() if len(v) != 1}
    # at most the one instance the kill caught between its rename and its record may come twice
    assert len(extra) <= 1, extra
    assert [p.name for p in (w.output / "series").iterdir()] == [f"{uid}.json"]
    final = json.loads((w.output / "series" / f"{uid}.json").read_text())
    assert final["instances"] == 40 and final["revision"] == len(w.events("series.classified")) >= 2
    assert w.stop() == 0


def test_kill_9_of_the_watch_service_mid_series_gives_one_verdict_each(service, rng, tmp_path):
    port = free_port()
    w = service(args=SERIES_ARGS).start()
    uid = generate_uid()
    folder = tmp_path / "send"
    folder.mkdir()
    datasets = series([head(rng, k == 5) for k in range(30)], series=uid)
    for k, ds in enumerate(datasets):
        write(ds, folder / f"s{k:02d}.dcm")
    rx = Receive(tmp_path, port)
    try:
        rx.wait_for("receive.ready")
        sender = subprocess.Popen([sys.executable, "-m", "pynetdicom", "storescu", "127.0.0.1", str(port),
                                   str(folder), "-aec", "TUMORD"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        w.wait_for("scan.classified", 3)
        w.proc.send_signal(signal.SIGKILL)
        w.proc.wait(10)
        assert sender.wait(60) == 0
        w.start()
        w.wait_for("series.classified", 1, timeout=60)  # a series never completes with files still queued
    finally:
        rx.close()
    by = _count_by_sop(w.output)
    assert sorted(by) == sorted(ds.SOPInstanceUID for ds in datasets)
    assert all(len(v) == 1 for v in by.values())
    assert len(list((w.output / "series").glob("*.json"))) == 1
    s = json.loads((w.output / "series" / f"{uid}.json").read_text())
    assert s["instances"] == 30
    rows = w.output.joinpath("verdicts.csv").read_text(encoding="utf-8-sig").splitlines()
    assert len(rows) == 31  # header + one line per instance
    assert w.stop() == 0


def test_what_cannot_be_stored_gets_a_failure_status_and_a_log_line(tmp_path):
    """0xA900 for an instance without a valid SOP Instance UID (nothing to name its file by), 0xA700
    when the disk refuses the write (here: the staging folder replaced by a file), as storescu reports."""
    bad = pydicom.dcmread(bundled("MR_small.dcm"))
    bad.SOPInstanceUID = bad.file_meta.MediaStorageSOPInstanceUID = "1.2.abc"
    write(bad, tmp_path / "bad.dcm")
    (tmp_path / "input").mkdir()
    port = free_port()
    rx = Receive(tmp_path, port)
    try:
        rx.wait_for("receive.ready")
        sent = scu("storescu", port, str(tmp_path / "bad.dcm"), "-v")
        assert "Status: 0xA900 - Failure" in sent.stderr
        staging = tmp_path / "input" / ".tumord-receiving"
        staging.rmdir()
        staging.write_bytes(b"")
        sent = scu("storescu", port, str(bundled("MR_small.dcm")), "-v")
        assert "Status: 0xA700 - Failure" in sent.stderr
        staging.unlink()  # the disk recovers: the same instance is stored on the next attempt
        sent = scu("storescu", port, str(bundled("MR_small.dcm")), "-v")
        assert "Status: 0x0000" in sent.stderr
        rx.wait_for("association.released", 3)
    finally:
        rx.close()
    assert [e["status"] for e in rx.events("instance.refused")] == ["0xa900"]
    assert [e["status"] for e in rx.events("instance.store_failed")] == ["0xa700"]
    assert [e["refused"] for e in rx.events("association.released")] == [1, 1, 0]
    assert [p.name for p in (tmp_path / "input").glob("*.dcm")] == [f"{pydicom.dcmread(bundled('MR_small.dcm')).SOPInstanceUID}.dcm"]
