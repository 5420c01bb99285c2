"""The classify stage on real files: every bad input becomes a reason, good ones a prediction."""
import hashlib
import os
import queue
import time

import cv2
import numpy as np
import pytest

from tests.service.conftest import make_model, png
from tumord.logs import get_logger
from tumord.model import checkpoint
from tumord.model.registry import current_model_path
from tumord.service.classify import Classify, Limits, prepare
from tumord.service.records import Inflight, Ready
from tumord.service.ledger import Ledger
from tumord.service.swap import ModelSlot

LIMITS = Limits(max_pixels=25_000_000, max_bytes=10_000_000, stable_seconds=0)


@pytest.fixture
def model(tmp_path):
    make_model(tmp_path / "models", size=32)
    return checkpoint.load(current_model_path(tmp_path / "models"))


@pytest.fixture
def root(tmp_path):
    (tmp_path / "in").mkdir()
    return tmp_path / "in"


def ready(path) -> Ready:
    return Ready(str(path), "2025-01-01T00:00:00.000Z", time.monotonic())


class TestPrepare:
    def test_good_scan_is_decoded_at_model_size_with_its_hash(self, root, model, rng):
        """A PNG becomes a uint8 image at the model's size; the fingerprint carries the bytes' SHA-256."""
        data = png(rng, size=80)
        (root / "ok scan é.png").write_bytes(data)
        s = prepare(ready(root / "ok scan é.png"), str(root), model, LIMITS)
        assert s.error is None and s.image.shape == (32, 32) and s.image.dtype == np.uint8
        assert s.rel == "ok scan é.png" and s.fingerprint.sha256 == hashlib.sha256(data).hexdigest()

    def test_rgba_16_bit_tiff_is_a_scan_too(self, root, model):
        """Other supported encodings (16-bit RGBA TIFF) decode to the same gray input."""
        img = (np.random.default_rng(0).random((40, 50, 4)) * 65535).astype(np.uint16)
        cv2.imwrite(str(root / "deep.tif"), img)
        s = prepare(ready(root / "deep.tif"), str(root), model, LIMITS)
        assert s.error is None and s.image.shape == (32, 32)

    def test_bad_inputs_each_get_a_reason(self, root, tmp_path, model, rng):
        """Folders, pipes, links out, oversize, wrong extensions and corrupt bytes are refused with words."""
        (root / "folder.png").mkdir()
        os.mkfifo(root / "pipe.png")  # reading it would block forever
        (tmp_path / "outside.png").write_bytes(png(rng))
        os.symlink(tmp_path / "outside.png", root / "link.png")
        (root / "huge.png").write_bytes(png(rng) + bytes(2000))
        (root / "scan.gif").write_bytes(png(rng))
        (root / "corrupt.jpg").write_bytes(b"\xff\xd8" + bytes(rng.integers(0, 256, 300, dtype=np.uint8)))
        expect = {"folder.png": "is a folder", "pipe.png": "not a regular file", "link.png": "outside the input",
                  "huge.png": "the limit is", "scan.gif": "extension '.gif'", "corrupt.jpg": "corrupt JPEG"}
        small = Limits(max_pixels=25_000_000, max_bytes=len(png(rng)) + 1000, stable_seconds=0)
        for name, words in expect.items():
            s = prepare(ready(root / name), str(root), model, small)
            assert s.image is None and s.error.startswith(name) and words in s.error, (name, s.error)

    def test_a_file_that_may_still_be_growing_is_retried_not_failed(self, root, model, rng):
        """A truncated PNG modified within stable_seconds is tried again later; once it has held
        still that long and still does not decode, it fails."""
        data = png(rng)
        (root / "half.png").write_bytes(data[: len(data) // 2])
        s = prepare(ready(root / "half.png"), str(root), model, Limits(25_000_000, 10**8, stable_seconds=5))
        assert s.error is None and s.image is None and "truncated" in s.retry
        s = prepare(ready(root / "half.png"), str(root), model, Limits(25_000_000, 10**8, stable_seconds=0))
        assert s.retry is None and "truncated" in s.error

    def test_vanished_file_has_no_fingerprint(self, root, model):
        """A file gone before it is read is just dropped."""
        s = prepare(ready(root / "gone.png"), str(root), model, LIMITS)
        assert s.fingerprint is None and s.error is None


class TestClassify:
    def test_batch_uses_one_model_and_skips_judged_files(self, root, tmp_path, model, rng):
        """A batch is predicted with the model it started with; a file whose row is done is not predicted."""
        ledger = Ledger(tmp_path / "l.sqlite3")
        for i in range(3):
            (root / f"s{i}.png").write_bytes(png(rng))
        out, inflight = queue.Queue(), Inflight()
        c = Classify(root=root, ready=queue.Queue(), out=out, slot=ModelSlot(model), ledger=ledger, limits=LIMITS,
                     batch_size=8, threads=2, inflight=inflight, retry=lambda p, why=None: None, log=get_logger())
        first = c.classify([ready(root / f"s{i}.png") for i in range(3)])
        assert first.model is model and all(s.probabilities is not None for s in first.scans)
        expected = model.predict(np.stack([cv2.imread(str(root / f"s{i}.png"), 0) for i in range(3)]))
        np.testing.assert_allclose([s.probabilities for s in first.scans], expected, rtol=1e-5)
        (row,) = ledger.receive([("s0.x", first.scans[0].fingerprint, "t")])
        ledger.done([row.id], "t")
        second = c.classify([ready(root / "s0.png")])
        assert second.scans[0].already_done and second.scans[0].probabilities is None
        c.judge.close()

    def test_a_batch_is_predicted_by_several_threads_as_by_one(self, root, tmp_path, rng):
        """With predict_threads, a CNN's chunks of a batch run in the prediction threads, and
        each scan gets the probabilities a one-thread prediction gives."""
        import threading

        from tumord.data.images import Preprocess
        from tumord.nn.conv import cnn_spec
        from tumord.nn.network import Network

        net = Network((1, 32, 32), cnn_spec(channels=(4, 8), classes=2), np.random.default_rng(0))
        checkpoint.save(tmp_path / "cnn.npz", net, checkpoint.new_metadata(net, ["normal", "tumor"], Preprocess(size=32)))
        cnn = checkpoint.load(tmp_path / "cnn.npz")
        names = [f"c{i}.png" for i in range(11)]  # three chunks of the CNN's 4
        for n in names:
            (root / n).write_bytes(png(rng))
        c = Classify(root=root, ready=queue.Queue(), out=queue.Queue(), slot=ModelSlot(cnn),
                     ledger=Ledger(tmp_path / "l.sqlite3"), limits=LIMITS, batch_size=16, threads=2,
                     inflight=Inflight(), retry=lambda p, why=None: None, log=get_logger(), predict_threads=2)
        batch = c.classify([ready(root / n) for n in names])
        assert any(t.name.startswith("predict") for t in threading.enumerate())
        expected = cnn.predict(np.stack([cv2.resize(cv2.imread(str(root / n), 0), (32, 32),
                                                    interpolation=cv2.INTER_AREA) for n in names]))
        np.testing.assert_allclose([s.probabilities for s in batch.scans], expected, rtol=1e-5)
        c.judge.close()
