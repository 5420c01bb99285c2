"""The model file: safe to load, checked on load, clear about what is wrong."""
import zipfile

import numpy as np
import pytest

from tests.synthetic import tiny_model
from tumord.model import checkpoint
from tumord.model.checkpoint import CheckpointError


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.npz"
    tiny_model(path, size=16)
    return path


def test_round_trip_keeps_weights_metadata_and_predictions(model_file):
    """A saved model loads with its classes, preprocessing, identity and the same outputs."""
    m = checkpoint.load(model_file)
    assert m.class_names == ["normal", "tumor"] and m.preprocess.size == 16
    assert m.identity["sha256"] == checkpoint.weights_sha256(m.net.state_dict())
    assert m.identity["version"].endswith(m.identity["sha256"][:8])
    imgs = np.random.default_rng(0).integers(0, 255, (3, 16, 16), dtype=np.uint8)
    again = checkpoint.load(model_file)
    np.testing.assert_array_equal(m.predict(imgs), again.predict(imgs))
    for key in ("architecture", "created_at", "tumord_version", "preprocess", "temperature"):
        assert key in m.meta


def test_truncated_file_is_refused_naming_it(model_file):
    """Half a model file fails with an error that names the file."""
    data = model_file.read_bytes()
    model_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.npz"):
        checkpoint.load(model_file)


def test_altered_weights_fail_the_sha256_check(model_file, tmp_path):
    """Weights changed after saving no longer match their recorded SHA-256."""
    with np.load(model_file) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["1.W"] = arrays["1.W"] + 1e-3
    bad = tmp_path / "altered.npz"
    np.savez(bad, **arrays)
    with pytest.raises(CheckpointError, match="SHA-256"):
        checkpoint.load(bad)


def test_object_arrays_are_never_unpickled(tmp_path):
    """An .npz holding a pickled object array is refused instead of executed."""
    bad = tmp_path / "evil.npz"
    np.savez(bad, __metadata__=np.array([{"x": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="evil.npz"):
        checkpoint.load(bad)


def test_other_files_are_refused_clearly(tmp_path):
    """A zip without metadata or a text file is not mistaken for a model."""
    z = tmp_path / "plain.npz"
    np.savez(z, a=np.zeros(3))
    with pytest.raises(CheckpointError, match="no tumord metadata"):
        checkpoint.load(z)
    t = tmp_path / "notes.npz"
    t.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.npz"):
        checkpoint.load(t)
    with pytest.raises(CheckpointError, match="no such model file"):
        checkpoint.load(tmp_path / "missing.npz")
    assert not zipfile.is_zipfile(t)


def test_mismatched_architecture_is_refused(model_file, tmp_path):
    """Metadata that claims another architecture than the weights fit is refused."""
    import json

    with np.load(model_file) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays["__metadata__"].tobytes())
    meta["architecture"]["layers"][1]["units"] = 99
    arrays["__metadata__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    bad = tmp_path / "mismatch.npz"
    np.savez(bad, **arrays)
    with pytest.raises(CheckpointError, match="do not fit"):
        checkpoint.load(bad)


def test_a_preprocessing_step_this_code_lacks_is_refused(tmp_path):
    """A model from a newer tumord whose preprocessing has an unknown step is refused with a
    CheckpointError (which the service's model swap handles), not misread."""
    from tumord.data.images import Preprocess
    from tumord.nn.network import Network, mlp_spec

    net = Network((1, 16, 16), mlp_spec(hidden=8, classes=2), np.random.default_rng(0))
    meta = checkpoint.new_metadata(net, ["normal", "tumor"], Preprocess(size=16))
    meta["preprocess"]["denoise"] = "strong"
    checkpoint.save(tmp_path / "newer.npz", net, meta)
    with pytest.raises(CheckpointError, match=r"newer.npz: preprocessing: unknown preprocessing settings \['denoise'\]"):
        checkpoint.load(tmp_path / "newer.npz")
