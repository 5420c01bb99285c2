"""`tumord feedback` and `tumord review` on the output of a real `tumord watch` run."""
from __future__ import annotations

import json
import os
import shutil

import cv2
import numpy as np
import pytest
import yaml

from tests.abstain.models import cnn_model, scans
from tests.service.conftest import Watch, drop, point, verdicts
from tumord.cli import main
from tumord.labelling.ranking import priorities


def encode(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


def text_frame() -> np.ndarray:
    img = np.zeros((64, 64), np.uint8)
    cv2.putText(img, "ID 7", (4, 36), cv2.FONT_HERSHEY_SIMPLEX, 0.7, 255, 2)
    return img


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    """A folder where `tumord watch` judged four generated scans, a text frame and a blank frame."""
    root = tmp_path_factory.mktemp("judged")
    model = cnn_model(root / "cnn.npz")
    folder = root / "models" / "versions" / model.meta["version"]
    folder.mkdir(parents=True)
    (root / "cnn.npz").rename(folder / "model.npz")
    point(root / "models", model.meta["version"])
    w = Watch(root)
    try:
        w.start()
        w.wait_for("service.ready")
        for i, img in enumerate(scans(4, 321)[0]):
            drop(w.input, f"s{i}.png", encode(img))
        drop(w.input, "text.png", encode(text_frame()))
        drop(w.input, "blank.png", encode(np.zeros((64, 64), np.uint8)))
        w.wait_for("scan.classified", 6)
        assert w.stop() == 0
    finally:
        w.kill()
    return root


@pytest.fixture
def site(judged, tmp_path):
    """A private copy of the judged folder (archive paths in the verdicts point into the copy)."""
    root = tmp_path / "site"
    shutil.copytree(judged, root, symlinks=True)
    for p in (root / "output").glob("*.json"):
        p.write_text(p.read_text().replace(str(judged), str(root)))
    cfg = yaml.safe_load((root / "config.yaml").read_text())
    cfg["paths"]["training"] = "training"
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    return root


def verdict_of(root, file: str) -> dict:
    return next(v for v in verdicts(root / "output") if v["file"] == file)


def cli(root, monkeypatch, *args) -> int:
    monkeypatch.chdir(root)
    return main(list(args))


def test_feedback_files_a_link_to_the_archived_scan_with_its_provenance(site, monkeypatch, capsys):
    v = verdict_of(site, "s0.png")
    other = "normal" if v["label"] == "tumor" else "tumor"
    assert cli(site, monkeypatch, "feedback", v["verdict"], "--label", other, "--by", "dr-a") == 0
    stem = v["verdict"].removesuffix(".json")
    filed, archived = site / "training" / other / f"{stem}.png", site / "output" / "archive" / f"{stem}.png"
    assert archived.is_file() and os.path.samefile(filed, archived)  # a second name, never a move
    record = json.loads((site / "training" / other / f"{stem}.feedback.json").read_text())
    assert record["label"] == other and record["model_label"] == v["label"] and record["agreed"] is False
    assert record["by"] == "dr-a" and record["verdict"] == v["verdict"] and record["model"] == v["model"]
    assert record["at"].endswith("Z") and record["sha256"] == v["sha256"]
    assert "filed:" in capsys.readouterr().err


def test_feedback_by_sha256_or_by_the_scan_file_again_changes_nothing(site, monkeypatch, tmp_path, capsys):
    v = verdict_of(site, "s1.png")
    assert cli(site, monkeypatch, "feedback", v["sha256"], "--label", v["label"]) == 0
    provenance = next((site / "training" / v["label"]).glob("*.feedback.json"))
    before = provenance.read_bytes(), provenance.stat().st_mtime_ns
    copy = tmp_path / "from-pacs.png"
    shutil.copyfile(site / "output" / "archive" / v["verdict"].replace(".json", ".png"), copy)
    assert cli(site, monkeypatch, "feedback", str(copy), "--label", v["label"]) == 0
    assert cli(site, monkeypatch, "feedback", v["sha256"][:12], "--label", v["label"]) == 0
    assert (provenance.read_bytes(), provenance.stat().st_mtime_ns) == before
    assert capsys.readouterr().err.count("unchanged:") == 2
    assert sorted(p.name for p in (site / "training").rglob("*") if p.is_file()) == sorted(
        [provenance.name, provenance.name.replace(".feedback.json", ".png")])


def test_a_corrected_label_moves_the_training_copy_and_keeps_the_earlier_label(site, monkeypatch):
    v = verdict_of(site, "s2.png")
    stem = v["verdict"].removesuffix(".json")
    assert cli(site, monkeypatch, "feedback", v["verdict"], "--label", "normal", "--by", "a") == 0
    assert cli(site, monkeypatch, "feedback", v["verdict"], "--label", "tumor", "--by", "b") == 0
    assert not list((site / "training" / "normal").glob(f"{stem}*"))
    record = json.loads((site / "training" / "tumor" / f"{stem}.feedback.json").read_text())
    assert record["by"] == "b" and [p["label"] for p in record["previous_labels"]] == ["normal"]
    assert (site / "training" / "tumor" / f"{stem}.png").is_file()


def test_unknown_labels_verdicts_and_missing_scans_are_refused(site, monkeypatch, capsys):
    v = verdict_of(site, "s3.png")
    assert cli(site, monkeypatch, "feedback", v["verdict"], "--label", "glioma") == 2
    assert "--label 'glioma' is not one of the model's classes (normal, tumor)" in capsys.readouterr().err
    assert cli(site, monkeypatch, "feedback", "nope.123456789abc.json", "--label", "tumor") == 2
    assert "no such verdict" in capsys.readouterr().err
    (site / "output" / "archive" / v["verdict"].replace(".json", ".png")).unlink()
    assert cli(site, monkeypatch, "feedback", v["verdict"], "--label", "tumor") == 2
    assert "pass the scan file itself" in capsys.readouterr().err
    assert not (site / "training").exists()


def test_review_ranks_far_and_uncertain_scans_first_and_writes_a_contact_sheet(site, monkeypatch, capsys):
    assert cli(site, monkeypatch, "feedback", verdict_of(site, "s0.png")["verdict"], "--label", "tumor") == 0
    capsys.readouterr()
    sheet = site / "sheet.png"
    assert cli(site, monkeypatch, "review", "--next", "10", "--json", "--sheet", str(sheet)) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    listed = [r["verdict"] for r in rows]
    assert verdict_of(site, "s0.png")["verdict"] not in listed  # labelled already
    assert verdict_of(site, "blank.png")["verdict"] not in listed and "1 more fail the input checks" in err
    assert len(rows) == 4 and "4 unlabelled archived scans" in err
    assert [r["priority"] for r in rows] == sorted((r["priority"] for r in rows), reverse=True)
    text = next(r for r in rows if r["verdict"] == verdict_of(site, "text.png")["verdict"])
    assert text["relative_distance"] == max(r["relative_distance"] for r in rows) > 1
    img = cv2.imread(str(sheet), cv2.IMREAD_GRAYSCALE)
    assert img is not None and img.shape[1] == 4 * 160


def test_review_table_and_bad_options(site, monkeypatch, capsys):
    assert cli(site, monkeypatch, "review", "--next", "2") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["#", "PRIORITY", "LABEL", "CONF", "DIST", "VERDICT"] and len(out) == 3
    assert cli(site, monkeypatch, "review", "--next", "0") == 2
    assert cli(site, monkeypatch, "review", "--sheet", "x.jpg") == 2
    assert "expected a .png file name" in capsys.readouterr().err


def test_priority_is_the_mean_of_the_percentile_ranks_of_uncertainty_and_distance():
    uncertainty, distance = [0.9, 0.1, 0.5, 0.2], [0.5, 3.0, 0.4, 0.1]
    # uncertainty ranks 3, 0, 2, 1 and distance ranks 2, 3, 1, 0, out of 3
    assert list(priorities(uncertainty, distance)) == pytest.approx([5 / 6, 1 / 2, 1 / 2, 1 / 6])
    assert list(priorities(uncertainty, None)) == pytest.approx([1, 0, 2 / 3, 1 / 3])
