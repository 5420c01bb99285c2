"""`tumord watch` as a real process on real folders: bursts, slow writers, bad input, kill -9, swaps, signals."""
import hashlib
import json
import os
import signal
import struct
import subprocess
import time
import zlib

import cv2
import numpy as np
import pytest

from tests.service.conftest import (csv_rows, drop, leftovers, ledger_rows, make_model, png, point, staged,
                                    systemd_messages, verdicts)
from tumord.model import checkpoint


def drop_many(w, rng, n, prefix="scan"):
    """Writes n distinct PNGs to a staging folder, then renames them all into input/ at once."""
    digests = staged(w, rng, n, prefix, name="{prefix} {i:04d}.png")
    for name in digests:
        os.replace(w.root / "staging" / name, w.input / name)
    return digests


def assert_exactly_once(w, digests: dict):
    """Every scan has one verdict with the right hash, one CSV row, one done ledger row; nothing partial."""
    vs = verdicts(w.output)
    assert sorted(v["file"] for v in vs) == sorted(digests), "missing or doubled verdicts"
    assert all(v["sha256"] == digests[v["file"]] for v in vs)
    rows = csv_rows(w.output)
    assert len(rows) == len(vs) and {r["verdict"] for r in rows} == {v["verdict"] for v in vs}
    ledger = ledger_rows(w.output)
    assert len(ledger) == len(vs) and {r["state"] for r in ledger} == {"done"}
    assert sorted(r["name"] + ".json" for r in ledger) == sorted(v["verdict"] for v in vs)
    assert os.listdir(w.input) == [] and len(os.listdir(w.output / "archive")) == len(vs)
    assert leftovers(w.output) == []


def bomb_png(side: int) -> bytes:
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))


class TestThroughput:
    def test_burst_of_2000_files_is_classified_exactly_once(self, service, rng):
        """2,000 files dropped at once: each gets exactly one verdict, CSV row and ledger row."""
        w = service().start()
        w.wait_for("service.ready")
        digests = drop_many(w, rng, 2000)
        w.wait_until(lambda: len(w.events("scan.classified")) >= 2000, timeout=120, what="2000 verdicts")
        assert w.stop() == 0
        assert_exactly_once(w, digests)
        assert w.events("scan.failed") == []

    @pytest.mark.parametrize("setting", [1, 0])
    def test_blas_threads_setting_caps_the_network_threads_of_the_running_service(self, service, setting):
        """watch.blas_threads reaches the BLAS library inside the service (as threadpoolctl reads it
        there); 0 leaves the library's default, which this test process still has."""
        from tumord.service.service import limit_blas_threads

        default = limit_blas_threads(0)  # reads this process's count, changes nothing
        w = service(watch={"blas_threads": setting}).start()
        (ready,) = w.wait_for("service.ready")
        assert ready["blas_threads"] == (setting or default)
        assert w.stop() == 0

    def test_backlog_is_classified_at_start(self, service, rng):
        """Files already waiting when the service starts are classified."""
        w = service()
        digests = {}
        for i in range(20):
            data = png(rng)
            drop(w.input, f"old {i}.png", data)
            digests[f"old {i}.png"] = hashlib.sha256(data).hexdigest()
        w.start()
        w.wait_until(lambda: len(w.events("scan.classified")) >= 20, timeout=30, what="backlog")
        assert w.stop() == 0
        assert_exactly_once(w, digests)


class TestCompleteness:
    @pytest.mark.parametrize("observer", ["native", "polling"])
    def test_slow_writer_is_never_classified_half_written(self, service, rng, observer):
        """A PNG written a few bytes every 100 ms for 2 s is classified once, whole, never failed."""
        w = service(watch={"observer": observer}).start()
        w.wait_for("service.ready")
        data = png(rng, size=64)
        step = max(1, len(data) // 20)
        with open(w.input / "slow.png", "wb") as f:
            for i in range(0, len(data), step):
                f.write(data[i:i + step])
                f.flush()
                time.sleep(0.1)
        (v,) = w.wait_for("scan.classified", timeout=20)
        assert v["file"] == "slow.png" and w.events("scan.failed") == []
        assert verdicts(w.output)[0]["sha256"] == hashlib.sha256(data).hexdigest()
        assert w.stop() == 0

    def test_temporary_name_is_classified_after_rename(self, service, rng):
        """A .part file is left alone until renamed, then classified under its real name."""
        w = service().start()
        w.wait_for("service.ready")
        (w.input / "incoming.png.part").write_bytes(png(rng))
        time.sleep(1.5)
        assert w.events("scan.classified") == [] and w.events("scan.failed") == []
        os.rename(w.input / "incoming.png.part", w.input / "incoming.png")
        (v,) = w.wait_for("scan.classified")
        assert v["file"] == "incoming.png"
        assert w.stop() == 0


class TestBadInput:
    def test_every_kind_of_bad_input_goes_to_failed_with_a_reason(self, service, rng, tmp_path):
        """Bad files each get an error JSON in failed/; odd names work; the service keeps classifying."""
        w = service(watch={"max_pixels": 1_000_000}).start()
        w.wait_for("service.ready")
        good = png(rng)
        (tmp_path / "secret.png").write_bytes(good)
        bad = {
            "empty.png": (b"", "empty"),
            "truncated.png": (good[: len(good) // 2], "truncated"),
            "corrupt.jpg": (b"\xff\xd8\xff\xdb\x00\x04\x00\x00" + bytes(rng.integers(0, 256, 400, dtype=np.uint8)),
                            "JPEG"),
            "random.png": (bytes(rng.integers(0, 256, 2000, dtype=np.uint8)), "not a JPEG, PNG, TIFF or BMP"),
            "notes.jpg": ("Patient notes: nothing to see\n".encode(), "contains text"),
            "bomb.png": (bomb_png(50_000), "limit is 1 megapixels"),
            "anim.gif": (b"GIF89a" + bytes(100), "extension '.gif'"),
        }
        for name, (data, _) in bad.items():
            drop(w.input, name, data)
        (w.input / "folder.png").mkdir()
        os.symlink(tmp_path / "secret.png", w.input / "escape.png")
        bad["folder.png"] = (None, "is a folder")
        bad["escape.png"] = (None, "outside the input folder")
        odd = ["ünïcödé scan.png", "with  spaces.png", "=HYPERLINK(evil).png", "-dash;quote'\"x.png", "脑 🧠.png"]
        for name in odd:
            drop(w.input, name, png(rng))
        latin1 = os.path.join(os.fsencode(w.input), b"caf\xe9 scan.png")  # not UTF-8, as from an old file share
        with open(latin1, "wb") as f:
            f.write(png(rng))
        odd.append("caf\ufffd scan.png")
        w.wait_until(lambda: len(w.events("scan.failed")) >= len(bad) and len(w.events("scan.classified")) >= len(odd),
                     timeout=30, what="all bad and odd files handled")
        errors = {json.loads(p.read_text())["file"]: json.loads(p.read_text())
                  for p in (w.output / "failed").glob("*.error.json")}
        assert sorted(errors) == sorted(bad)
        for name, (_, words) in bad.items():
            assert words in errors[name]["error"], (name, errors[name]["error"])
            assert os.path.lexists(errors[name]["moved_to"])
        assert sorted(v["file"] for v in verdicts(w.output)) == sorted(odd)
        cells = {r["file"] for r in csv_rows(w.output)}
        assert "'=HYPERLINK(evil).png" in cells and "'-dash;quote'\"x.png" in cells and "脑 🧠.png" in cells
        drop(w.input, "after.png", png(rng))  # still serving
        w.wait_until(lambda: any(e["file"] == "after.png" for e in w.events("scan.classified")), timeout=20,
                     what="a good file after the bad ones")
        assert os.listdir(w.input) == []
        assert w.stop() == 0

    def test_same_name_at_different_times_gets_two_verdicts(self, service, rng):
        """scan.png dropped, archived, then dropped again: two verdicts, two archive files."""
        w = service().start()
        w.wait_for("service.ready")
        for n in (1, 2):
            drop(w.input, "scan.png", png(rng))
            w.wait_until(lambda: len(w.events("scan.classified")) >= n, timeout=20, what=f"verdict {n}")
        assert len({v["verdict"] for v in verdicts(w.output)}) == 2 and len(os.listdir(w.output / "archive")) == 2
        assert w.stop() == 0


class TestCrashSafety:
    def test_kill_9_during_a_burst_then_restart_is_exactly_once(self, service, rng):
        """kill -9 at random moments of bursts, eight times, then a final run: exactly one verdict each,
        and no visible output file is ever partial."""
        w = service(watch={"batch_size": 16})
        digests = {}
        kills = np.random.default_rng(7)
        for round_ in range(8):
            w.start()
            w.wait_for("service.ready", timeout=30)
            digests.update(drop_many(w, rng, 150, prefix=f"r{round_}"))
            time.sleep(float(kills.uniform(0.0, 0.6)))
            w.proc.send_signal(signal.SIGKILL)
            w.proc.wait(10)
            for p in w.output.glob("*.json"):  # written by rename: whole or absent, even now
                json.loads(p.read_text())
        w.start()
        w.wait_until(lambda: len(os.listdir(w.input)) == 0, timeout=90, what="input folder empty")
        w.wait_until(lambda: all(r["state"] == "done" for r in ledger_rows(w.output)), timeout=10, what="ledger done")
        assert w.stop() == 0
        assert_exactly_once(w, digests)


class TestModels:
    def test_swap_during_a_burst_and_refused_models(self, service, rng, tmp_path):
        """A model promoted mid-burst takes over between batches; each verdict names the model that made it;
        a corrupt model is refused and the serving one stays."""
        models = tmp_path / "models"
        a = checkpoint.load(models / "versions" / json.loads((models / "current.json").read_text())["current"]
                            / "model.npz")
        b_meta = make_model(models, seed=9, promote=False)
        w = service(watch={"batch_size": 16}).start()
        w.wait_for("service.ready")
        digests = drop_many(w, rng, 400, prefix="first")
        w.wait_until(lambda: len(w.events("scan.classified")) >= 100, timeout=60, what="first verdicts")
        point(models, b_meta["version"])  # while the first wave is still being classified
        (swap,) = w.wait_for("model.swapped", timeout=10)
        assert swap["new"]["version"] == b_meta["version"]
        digests.update(drop_many(w, rng, 200, prefix="second"))
        w.wait_until(lambda: len(w.events("scan.classified")) >= 600, timeout=90, what="600 verdicts")
        vs = verdicts(w.output)
        used = {v["model"]["version"] for v in vs}
        assert used == {a.identity["version"], b_meta["version"]}
        assert {v["model"]["version"] for v in vs if v["file"].startswith("second")} == {b_meta["version"]}
        b = checkpoint.load(models / "versions" / b_meta["version"] / "model.npz")
        by_version = {m.identity["version"]: m for m in (a, b)}
        for v in vs[::25]:  # the probabilities are those of the model the verdict names
            m = by_version[v["model"]["version"]]
            img = cv2.imread(str(w.output / "archive" / v["verdict"].replace(".json", ".png")), cv2.IMREAD_GRAYSCALE)
            probs = m.predict(img[None])[0]
            assert v["model"]["sha256"] == m.identity["sha256"]
            np.testing.assert_allclose([v["probabilities"][c] for c in m.class_names], probs, atol=2e-6)
        broken = models / "versions" / "broken"
        broken.mkdir()
        (broken / "model.npz").write_bytes(b"PK\x03\x04 this is not a model")
        point(models, "broken")
        (refused,) = w.wait_for("model.refused", timeout=10)
        assert "broken/model.npz" in refused["reason"]
        drop(w.input, "after.png", png(rng))
        w.wait_until(lambda: len(w.events("scan.classified")) >= 601, timeout=20, what="verdict after refusal")
        assert json.loads(next(w.output.glob("after.*.json")).read_text())["model"]["version"] == b_meta["version"]
        assert w.stop() == 0
        assert len(ledger_rows(w.output)) == len(digests) + 1 == len(verdicts(w.output))

    def test_a_copied_version_folder_is_never_served(self, service, rng, tmp_path):
        """Issue 12 item 8: current.json pointed by hand at a version folder copied with `cp -a`
        under another name: the service refuses it and keeps serving, and verdicts name the model
        that made them, as `models list` does."""
        models = tmp_path / "models"
        serving = json.loads((models / "current.json").read_text())["current"]
        other = make_model(models, seed=5, promote=False)["version"]
        copy = "20300101T000000Z-0000copy"
        subprocess.run(["cp", "-a", str(models / "versions" / other), str(models / "versions" / copy)], check=True)
        w = service().start()
        w.wait_for("service.ready")
        point(models, copy)
        (refused,) = w.wait_for("model.refused", timeout=10)
        assert copy in refused["reason"] and other in refused["reason"]
        drop(w.input, "x.png", png(rng))
        w.wait_for("scan.classified")
        assert verdicts(w.output)[0]["model"]["version"] == serving and w.events("model.swapped") == []
        assert w.stop() == 0

    def test_sighup_reloads_the_model(self, service, rng, tmp_path):
        """With --model FILE, SIGHUP loads the file again and later verdicts name the new model."""
        models = tmp_path / "models"
        pinned = tmp_path / "pinned.npz"
        first = next((models / "versions").glob("*/model.npz"))
        pinned.write_bytes(first.read_bytes())
        w = service(args=["--model", str(pinned)]).start()
        w.wait_for("service.ready")
        other = make_model(models, seed=4, promote=False)
        pinned.write_bytes((models / "versions" / other["version"] / "model.npz").read_bytes())
        w.send(signal.SIGHUP)
        (swap,) = w.wait_for("model.swapped", timeout=10)
        assert swap["new"]["version"] == other["version"] and "SIGHUP" in swap["reason"]
        drop(w.input, "x.png", png(rng))
        w.wait_for("scan.classified")
        assert verdicts(w.output)[0]["model"]["version"] == other["version"]
        assert w.stop() == 0


class TestSignals:
    def test_sigterm_drains_in_flight_work_and_exits_0_within_10_s(self, service, rng):
        """SIGTERM mid-burst: exit 0 within 10 s, nothing half-done; a restart finishes the rest exactly once."""
        w = service().start()
        w.wait_for("service.ready")
        digests = drop_many(w, rng, 1000)
        w.wait_until(lambda: len(w.events("scan.classified")) >= 50, timeout=60, what="first verdicts")
        t = time.monotonic()
        assert w.stop(timeout=15) == 0
        assert time.monotonic() - t < 10
        assert {r["state"] for r in ledger_rows(w.output)} == {"done"}
        done = {v["file"] for v in verdicts(w.output)}
        assert done.isdisjoint(os.listdir(w.input)) and len(done) + len(os.listdir(w.input)) == 1000
        w.start()
        w.wait_until(lambda: len(os.listdir(w.input)) == 0, timeout=60, what="the rest")
        w.wait_until(lambda: len(verdicts(w.output)) == 1000, timeout=10, what="all verdicts")
        assert w.stop() == 0
        assert_exactly_once(w, digests)

    def test_sigint_also_stops_cleanly(self, service):
        """SIGINT (Ctrl-C) takes the same path: exit 0."""
        w = service().start()
        w.wait_for("service.ready")
        w.send(signal.SIGINT)
        assert w.proc.wait(10) == 0

    def test_systemd_notifications(self, service, rng):
        """READY=1 once serving, STATUS with counts and model, WATCHDOG=1 pings, STOPPING=1 on SIGTERM."""
        with systemd_messages() as (address, got):
            w = service(env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"}).start()
            w.wait_for("service.ready")
            drop(w.input, "n.png", png(rng))
            w.wait_for("scan.classified")
            time.sleep(0.6)
            assert w.stop() == 0
        text = "\n".join(got)
        assert got[0].startswith("READY=1") and "STATUS=" in got[0] and "model " in got[0]
        assert text.count("WATCHDOG=1") >= 2
        assert any("classified 1" in m for m in got) and "STOPPING=1" in text


class TestExplain:
    def test_explain_option_writes_a_heat_map_beside_each_verdict(self, service, rng):
        """With watch.explain, each verdict names a PNG heat map written beside it; failures get none."""
        w = service(watch={"explain": True}).start()
        w.wait_for("service.ready")
        drop(w.input, "a.png", png(rng))
        drop(w.input, "bad.png", b"not an image")
        w.wait_for("scan.classified")
        w.wait_for("scan.failed")
        assert w.stop() == 0
        (v,) = verdicts(w.output)
        heat = cv2.imread(str(w.output / v["explanation"]))
        assert v["explanation"] == v["verdict"].replace(".json", ".png")
        assert heat is not None and heat.shape[1] == 2 * heat.shape[0]
        assert sorted(p.suffix for p in w.output.glob("*.png")) == [".png"]
