"""The train, eval and predict commands end to end on generated scans."""
import json

import cv2
import numpy as np
import pytest

from tests.synthetic import SMALL_MLP, as_set_options, scan, write_dataset
from tumord.cli import main
from tumord.model import checkpoint
from tumord.model.registry import current_model_path

SMALL = as_set_options(SMALL_MLP)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small model trained with `tumord train` on generated scans, shared by the tests below."""
    root = tmp_path_factory.mktemp("work")
    import os

    old = os.getcwd()
    os.chdir(root)
    try:
        write_dataset(root / "data", per_class=80, size=64)
        assert main(["train", "--data", "data", *SMALL]) == 0
    finally:
        os.chdir(old)
    return root


def test_train_registers_a_calibrated_model_with_its_report(trained):
    """train writes the model, report.json and report.png, and makes the model current."""
    model_path = current_model_path(trained / "models")
    m = checkpoint.load(model_path)
    report = json.loads((model_path.parent / "report.json").read_text())
    assert report["test"]["accuracy"] >= 0.9, report["test"]
    assert report["model"]["sha256"] == m.identity["sha256"]
    assert (model_path.parent / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    split = report["split"]
    assert sum(len(v) for v in split.values()) == 160
    assert not set(split["train"]) & set(split["test"])
    cal = report["calibration"]
    # the temperature minimizes validation NLL: that lowers calibration error in general, though
    # not by a guaranteed amount on 24 validation images
    assert cal["temperature"] > 0 and cal["val_ece_after"] <= cal["val_ece_before"] + 0.02
    assert m.meta["training"]["summary"]["split_sizes"] == {k: len(v) for k, v in split.items()}
    iv = report["test"]["intervals"]  # over the test split's near-duplicate groups
    assert 0 < iv["groups"] <= len(split["test"]) and iv["auc"][0] <= report["test"]["auc"] <= iv["auc"][1]


def test_eval_json_has_the_documented_keys(trained, monkeypatch, capsys):
    """eval --json prints one object with accuracy, auc, sensitivity, specificity, n, and their
    intervals over near-duplicate groups."""
    monkeypatch.chdir(trained)
    capsys.readouterr()
    assert main(["eval", "--data", "data", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"accuracy", "auc", "sensitivity", "specificity", "n", "intervals"} <= set(out)
    assert out["n"] == 160 and out["accuracy"] > 0.9
    low, high = out["intervals"]["accuracy"]
    assert low <= out["accuracy"] <= high and 0 < out["intervals"]["groups"] <= 160


def test_predict_json_classifies_and_reports_bad_files_without_stopping(trained, monkeypatch, capsys, tmp_path):
    """predict gives a JSON line per good image, a per-file error for a bad one, and exit code 1."""
    monkeypatch.chdir(trained)
    rng = np.random.default_rng(99)
    tumor, normal, bad = tmp_path / "t.png", tmp_path / "n.jpg", tmp_path / "bad.png"
    cv2.imwrite(str(tumor), scan(True, rng, 64))
    cv2.imwrite(str(normal), scan(False, rng, 64))
    bad.write_bytes(b"\x89PNG but not really")
    capsys.readouterr()
    assert main(["predict", "--json", str(tumor), str(bad), str(normal)]) == 1
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["label"] for r in rows] == ["tumor", "normal"]
    for r in rows:
        assert set(r) >= {"file", "label", "probabilities", "confidence", "model"}
        assert sum(r["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        assert r["confidence"] == max(r["probabilities"].values())
        assert set(r["model"]) == {"version", "sha256"}
    assert "bad.png" in captured.err


def test_predict_explain_writes_a_heat_map_png(trained, monkeypatch, capsys, tmp_path):
    """--explain writes a PNG heat map per image and names it in the JSON line."""
    monkeypatch.chdir(trained)
    img = tmp_path / "t.png"
    cv2.imwrite(str(img), scan(True, np.random.default_rng(3), 64))
    capsys.readouterr()
    assert main(["predict", "--json", "--explain", "--explain-dir", str(tmp_path / "maps"), str(img)]) == 0
    row = json.loads(capsys.readouterr().out)
    heat = cv2.imread(row["explanation"])
    assert row["explanation"].endswith("t.explain.png") and heat is not None and heat.shape[1] == 2 * heat.shape[0]


def test_bad_setting_is_one_clear_line_and_exit_code_2(tmp_path, monkeypatch, capsys):
    """An unknown or mistyped setting names the key and the file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("train:\n  epochs: many\n")
    assert main(["eval", "--data", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert "config.yaml" in err and "train.epochs" in err and len(err.splitlines()) == 1
    (tmp_path / "config.yaml").write_text("trian:\n  epochs: 3\n")
    assert main(["eval", "--data", "x"]) == 2
    assert "unknown key trian" in capsys.readouterr().err
    (tmp_path / "config.yaml").write_text("train:\n  mixup: -0.2\n")
    assert main(["eval", "--data", "x"]) == 2
    assert "train.mixup = -0.2 is not valid; expected 0 (off) or a positive" in capsys.readouterr().err


def test_an_existing_output_folder_is_refused_before_training(tmp_path, capsys):
    write_dataset(tmp_path / "data", per_class=20, size=48)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    code = main(["train", "--data", str(tmp_path / "data"), "--output", str(tmp_path / "out"),
                 *as_set_options(SMALL_MLP), "--set", f"paths.cache={tmp_path / 'cache'}"])
    assert code == 2
    assert "already exists" in capsys.readouterr().err and not (tmp_path / "cache").exists()  # nothing trained
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_json_output_is_only_json_with_logs_on_stderr(trained, tmp_path):
    """Issue 12 item 10: `eval --json` on a cold cache and `predict --json`, as real processes piped
    like `| jq`: standard output is exactly one JSON document (eval) or one JSON line per image
    (predict); the cache's progress log goes to standard error."""
    import subprocess
    import sys

    from tests.support import child_env

    def run(*args):
        return subprocess.run([sys.executable, "-m", "tumord.cli", *args], cwd=trained, capture_output=True,
                              text=True, timeout=120, env=child_env())

    cold = run("eval", "--data", "data", "--json", "--set", f"paths.cache={tmp_path / 'cold-cache'}")
    assert cold.returncode == 0, cold.stderr
    assert json.loads(cold.stdout)["n"] == 160  # the whole of stdout is one JSON document
    assert "decoding" in cold.stderr  # the log line that used to precede the JSON on stdout
    img = tmp_path / "t.png"
    cv2.imwrite(str(img), scan(True, np.random.default_rng(5), 64))
    pred = run("predict", "--json", str(img), str(img))
    assert pred.returncode == 0, pred.stderr
    assert [json.loads(line)["file"] for line in pred.stdout.splitlines()] == [str(img), str(img)]
