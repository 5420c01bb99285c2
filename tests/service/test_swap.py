"""Model hot swap: follows models/current.json, reloads on request, refuses bad models."""
import time

from structlog.testing import capture_logs

from tests.service.conftest import make_model, point
from tumord.logs import get_logger
from tumord.model import checkpoint
from tumord.model.registry import current_model_path
from tumord.service.swap import ModelSlot, Swapper


def swapper(models, model_file=None):
    slot = ModelSlot(checkpoint.load(model_file or current_model_path(models)))
    s = Swapper(slot, models_dir=models, model_file=model_file, poll_seconds=0.05, log=get_logger())
    return slot, s


def wait(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


class TestSwapper:
    def test_follows_the_pointer(self, tmp_path):
        """Promoting a new version in models/ swaps it in within a poll."""
        models = tmp_path / "models"
        a = make_model(models, seed=1)
        slot, s = swapper(models)
        b = make_model(models, seed=2, promote=False)
        s.start()
        try:
            with capture_logs() as logs:
                point(models, b["version"])
                assert wait(lambda: slot.model.identity["version"] == b["version"])
        finally:
            s.stop()
            s.join()
        assert slot.model.identity["version"] != a["version"]
        assert [e["event"] for e in logs] == ["model.swapped"] and logs[0]["new"]["sha256"] == b["weights_sha256"]

    def test_corrupt_and_incompatible_models_are_refused(self, tmp_path):
        """A corrupt file and a model with other classes are refused, logged, and the old model serves."""
        models = tmp_path / "models"
        a = make_model(models, seed=1)
        slot, s = swapper(models)
        c = make_model(models, seed=3, promote=False, classes=("glioma", "meningioma", "none"))
        bad = models / "versions" / "broken"
        bad.mkdir()
        good = (models / "versions" / a["version"] / "model.npz").read_bytes()
        (bad / "model.npz").write_bytes(good[: len(good) // 2])
        with capture_logs() as logs:
            point(models, "broken")
            assert not s.try_swap("test")
            point(models, c["version"])
            assert not s.try_swap("test")
        assert slot.model.identity["version"] == a["version"]
        assert [e["event"] for e in logs] == ["model.refused", "model.refused"]
        assert "broken/model.npz" in logs[0]["reason"] and "classes" in logs[1]["reason"]

    def test_reload_rereads_a_pinned_model_file(self, tmp_path):
        """With a fixed model file, reload() (SIGHUP) loads the file again and swaps if it changed."""
        models = tmp_path / "models"
        make_model(models, seed=1)
        pinned = tmp_path / "pinned.npz"
        pinned.write_bytes(current_model_path(models).read_bytes())
        slot, s = swapper(models, model_file=pinned)
        s.start()
        try:
            b = make_model(models, seed=5, promote=False)
            pinned.write_bytes((models / "versions" / b["version"] / "model.npz").read_bytes())
            time.sleep(0.2)
            assert slot.model.identity["version"] != b["version"]  # no pointer change: no poll-triggered swap
            s.reload()
            assert wait(lambda: slot.model.identity["version"] == b["version"])
        finally:
            s.stop()
            s.join()

    def test_same_model_is_not_swapped(self, tmp_path):
        """Reloading the serving model changes nothing."""
        models = tmp_path / "models"
        make_model(models, seed=1)
        slot, s = swapper(models)
        before = slot.model
        with capture_logs() as logs:
            assert not s.try_swap("test")
        assert slot.model is before and logs[0]["event"] == "model.unchanged"
