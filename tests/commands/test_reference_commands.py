"""Every trained CNN carries a reference; `predict` shows abstentions; `add-reference` upgrades an old model."""
from __future__ import annotations

import io
import json
import shutil

import cv2
import numpy as np
import pytest

from tests.support import workdir
from tests.synthetic import write_dataset
from tumord.cli import main
from tumord.model import checkpoint, registry

SMALL_CNN = ["--set", "model.architecture=cnn", "--set", "model.channels=[4, 8]", "--set", "preprocess.size=64",
             "--set", "train.epochs=2", "--set", "train.precise_bn_batches=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = workdir(tmp_path_factory.mktemp("cnn"), per_class=30)
    assert main(["train", "--data", str(root / "data"), "--config", str(root / "config.yaml"), *SMALL_CNN,
                 "--output", str(root / "run")]) == 0
    return root


def test_training_stores_a_reference_built_on_its_own_split(trained):
    model = checkpoint.load(trained / "run" / "model.npz")
    report = json.loads((trained / "run" / "report.json").read_text())
    assert model.reference is not None
    assert model.meta["abstain"]["bank"] == len(report["split"]["train"])
    assert model.meta["abstain"]["validation_scans"] == len(report["split"]["val"])


def test_predict_shows_abstentions_with_reasons_and_still_gives_probabilities(trained, tmp_path, capsys):
    scan = sorted((trained / "data" / "tumor").glob("*.png"))[0]
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.zeros((64, 64), np.uint8))
    model = str(trained / "run" / "model.npz")
    assert main(["predict", "--model", model, "--json", str(scan), str(blank)]) == 0
    good, bad = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert good["abstained"] is False and good["feature_distance"]["method"] == "blocks"  # the default
    assert bad["abstained"] is True and bad["abstain_reasons"][0].startswith("blank or nearly constant")
    assert sum(bad["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    assert main(["predict", "--model", model, str(blank)]) == 0
    assert "ABSTAINED: blank or nearly constant" in capsys.readouterr().out


def strip_reference(path) -> None:
    """The model as tumord wrote it before abstention existed."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if not k.startswith("abstain.")}
    meta = json.loads(arrays.pop(checkpoint.META_KEY).tobytes())
    del meta["abstain"]
    buf = io.BytesIO()
    np.savez(buf, **arrays, **{checkpoint.META_KEY: np.frombuffer(json.dumps(meta).encode(), np.uint8)})
    path.write_bytes(buf.getvalue())


def test_add_reference_makes_a_new_current_version_and_keeps_the_old(trained, tmp_path, capsys):
    old_file = tmp_path / "old" / "model.npz"
    old_file.parent.mkdir()
    old_file.write_bytes((trained / "run" / "model.npz").read_bytes())
    (tmp_path / "old" / "report.json").write_text((trained / "run" / "report.json").read_text())
    strip_reference(old_file)
    models = trained / "models"
    old = registry.add_model(models, old_file)
    registry.promote(models, old)
    assert checkpoint.load(registry.current_model_path(models)).reference is None
    assert main(["add-reference", "--promote", "--config", str(trained / "config.yaml")]) == 0
    pointer = registry.read_pointer(models)
    new = pointer["current"]
    assert new != old and pointer["history"][0] == old and (registry.versions_dir(models) / old).is_dir()
    upgraded, before = checkpoint.load(registry.current_model_path(models)), checkpoint.load(old_file)
    assert upgraded.reference is not None and upgraded.meta["derived_from"]["version"] == old
    assert upgraded.meta["weights_sha256"] == before.meta["weights_sha256"]
    images = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted((trained / "data" / "normal").glob("*"))[:4]])
    np.testing.assert_array_equal(upgraded.predict(images), before.predict(images))
    assert registry.read_report(models, new)["abstention_reference"]["sha256"] == upgraded.meta["abstain"]["sha256"]
    assert f"added {new} (from {old}, same weights)" in capsys.readouterr().err


def test_add_reference_refuses_data_that_no_longer_give_the_model_s_split(trained, tmp_path, capsys):
    """A scan gone from the training folder: the split assembled again differs, nothing is fitted."""
    version = registry.add_model(tmp_path / "models", trained / "run" / "model.npz")
    report = json.loads((trained / "run" / "report.json").read_text())
    data = tmp_path / "data"
    shutil.copytree(trained / "data", data)
    gone = report["split"]["train"][0]
    (data / gone).unlink()
    assert main(["add-reference", "--version", version, "--config", str(trained / "config.yaml"),
                 "--set", f"paths.models={tmp_path / 'models'}", "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert "the train split assembled again differs from the one report.json lists" in err and gone in err
    assert registry.version_names(tmp_path / "models") == [version]


def test_add_reference_refits_a_model_trained_with_extra_data_exactly_as_training_stored_it(tmp_path, capsys):
    """The training scans are assembled again, extra folders included: the refitted reference is the
    one training stored, array for array (and gains nothing it had, loses nothing)."""
    root = workdir(tmp_path, per_class=30)
    write_dataset(tmp_path / "extra", per_class=12, size=64, seed=9, classes=("healthy", "tumour"))
    extra = ["--set", f"train.extra_data=[{tmp_path / 'extra'}]",
             "--set", "train.extra_classes=[healthy=normal, tumour=tumor]"]
    assert main(["train", "--data", str(root / "data"), "--config", str(root / "config.yaml"), *SMALL_CNN, *extra,
                 "--output", str(root / "run")]) == 0
    trained = checkpoint.load(root / "run" / "model.npz")
    report = json.loads((root / "run" / "report.json").read_text())
    (used,) = [e["used"] for e in report["summary"]["extra_training_data"]]
    assert used > 0 and trained.meta["abstain"]["bank"] == len(report["split"]["train"]) + used  # extra scans in it
    version = registry.add_model(root / "models", root / "run" / "model.npz")
    assert main(["add-reference", "--version", version, "--config", str(root / "config.yaml")]) == 0
    new = next(v for v in registry.version_names(root / "models") if v != version)
    refitted = checkpoint.load(registry.versions_dir(root / "models") / new / "model.npz")
    before, after = trained.reference.to_arrays(), refitted.reference.to_arrays()
    assert sorted(before) == sorted(after)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)
