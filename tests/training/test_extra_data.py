"""Training-only extra folders: classes mapped onto the model's, held-out near-duplicates left out."""
import json
import shutil

import numpy as np
import pytest

from tests.synthetic import SMALL_MLP, as_set_options, write_dataset
from tumord.cli import main
from tumord.training.extra_data import class_mapping


def test_class_mapping_names_the_setting_and_the_classes_on_a_bad_pair():
    assert class_mapping(["glioma=tumor", "notumor=normal"], ["normal", "tumor"]) == {
        "glioma": "tumor", "notumor": "normal"}
    for bad in ["glioma", "glioma=cancer", "=tumor"]:
        with pytest.raises(ValueError, match=r"train\.extra_classes: .* expected FOLDER=CLASS with CLASS one of "
                                             r"normal, tumor"):
            class_mapping([bad], ["normal", "tumor"])


def _train(tmp_path, name, *extra_settings):
    out = tmp_path / name
    code = main(["train", "--data", str(tmp_path / "data"), "--output", str(out), *as_set_options(SMALL_MLP),
                 "--set", f"paths.cache={tmp_path / 'cache'}", *extra_settings])
    assert code == 0
    return json.loads((out / "report.json").read_text())


def test_extra_folders_train_but_never_evaluate_and_leave_out_copies_of_held_out_scans(tmp_path):
    write_dataset(tmp_path / "data", per_class=40, size=48)
    # the extra folder: every main image again under other class names, plus new scans
    extra = tmp_path / "extra"
    shutil.copytree(tmp_path / "data" / "normal", extra / "healthy")
    shutil.copytree(tmp_path / "data" / "tumor", extra / "tumour")
    write_dataset(tmp_path / "new", per_class=15, size=48, seed=7, classes=("healthy", "tumour"))
    for cls in ("healthy", "tumour"):
        for p in (tmp_path / "new" / cls).iterdir():
            shutil.copy(p, extra / cls / f"new_{p.name}")

    plain = _train(tmp_path, "plain")
    with_extra = _train(tmp_path, "with_extra", "--set", f"train.extra_data=[{extra}]",
                        "--set", "train.extra_classes=[healthy=normal, tumour=tumor]")

    assert with_extra["split"] == plain["split"]  # extra data never changes validation or test
    (summary,) = with_extra["summary"]["extra_training_data"]
    held_out = len(plain["split"]["val"]) + len(plain["split"]["test"])
    assert summary["images"] == 110
    assert summary["left_out_near_duplicates"] >= held_out  # the copies of every held-out scan
    assert summary["used"] >= 30  # the new scans at least
    assert summary["used"] + summary["left_out_near_duplicates"] == 110


def test_an_unmapped_extra_class_is_refused_with_the_folder_named(tmp_path, capsys):
    write_dataset(tmp_path / "data", per_class=20, size=48)
    write_dataset(tmp_path / "extra", per_class=5, size=48, classes=("healthy", "glioma"))
    code = main(["train", "--data", str(tmp_path / "data"), "--output", str(tmp_path / "out"),
                 *as_set_options(SMALL_MLP), "--set", f"paths.cache={tmp_path / 'cache'}",
                 "--set", f"train.extra_data=[{tmp_path / 'extra'}]", "--set", "train.extra_classes=[healthy=normal]"])
    assert code == 2
    err = capsys.readouterr().err
    assert "glioma" in err and "normal, tumor" in err and not (tmp_path / "out").exists()
