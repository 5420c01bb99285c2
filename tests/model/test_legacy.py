"""Importing the original pickled weights without ever running code from the file."""
import os
import pickle

import numpy as np
import pytest

from tumord.cli import main
from tumord.model import checkpoint
from tumord.model.legacy import LegacyModelError, convert


def _legacy_dict(side=8, hidden=6, rng=np.random.default_rng(0)):
    return {
        "weights_input_hidden": rng.standard_normal((side * side, hidden)) * 0.1,
        "weights_hidden_output": rng.standard_normal((hidden, 2)) * 0.1,
        "bias_hidden": np.zeros((1, hidden)),
        "bias_output": np.zeros((1, 2)),
        "gamma_hidden": np.ones((1, hidden)) * 1.5,
        "beta_hidden": np.full((1, hidden), 0.1),
        "input_size": side * side, "hidden_size": hidden, "output_size": 2, "use_batch_norm": True,
    }


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_original_pickle_converts_and_predicts_like_the_original_math(tmp_path, protocol):
    """The converted model computes what the original formulas compute with the estimated statistics."""
    d = _legacy_dict()
    old = tmp_path / "old.pkl"
    old.write_bytes(pickle.dumps(d, protocol=protocol))
    imgs = np.random.default_rng(1).integers(0, 255, (20, 8, 8), dtype=np.uint8)
    meta = convert(old, tmp_path / "new.npz", calibration_images=imgs)
    assert "estimated from 20" in meta["training"]["batchnorm_statistics"]
    m = checkpoint.load(tmp_path / "new.npz")
    x = imgs.reshape(20, -1) / 255.0
    h = x @ d["weights_input_hidden"] + d["bias_hidden"]
    h = (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-5) * d["gamma_hidden"] + d["beta_hidden"]
    logits = np.maximum(h, 0) @ d["weights_hidden_output"] + d["bias_output"]
    expected = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(m.predict(imgs), expected, atol=1e-4)


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    """A pickle that calls os.system is refused with a clear error; the command never runs."""
    marker = tmp_path / "pwned"
    d = _legacy_dict()
    d["weights_input_hidden"] = _Evil(marker)
    old = tmp_path / "evil.pkl"
    old.write_bytes(pickle.dumps(d))
    with pytest.raises(LegacyModelError, match=r"evil.pkl.*(posix|os)\.system"):
        convert(old, tmp_path / "new.npz")
    assert not marker.exists()
    assert not (tmp_path / "new.npz").exists()


def test_import_model_command_refuses_malicious_pickle_with_exit_code(tmp_path, capsys):
    """`tumord import-model` reports the refusal on one line and exits non-zero."""
    marker = tmp_path / "pwned"
    old = tmp_path / "evil.pkl"
    old.write_bytes(pickle.dumps({"x": _Evil(marker)}))
    assert main(["import-model", str(old), str(tmp_path / "new.npz")]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "evil.pkl" in err
    assert not marker.exists()


def test_import_model_command_converts(tmp_path, capsys):
    """`tumord import-model OLD.pkl NEW.npz` writes a loadable model and says so."""
    old = tmp_path / "old.pkl"
    old.write_bytes(pickle.dumps(_legacy_dict()))
    assert main(["import-model", str(old), str(tmp_path / "new.npz")]) == 0
    assert checkpoint.load(tmp_path / "new.npz").preprocess.size == 8
    assert "new.npz" in capsys.readouterr().err
