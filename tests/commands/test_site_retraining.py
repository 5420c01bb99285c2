"""`tumord train` with the site's labelled scans (paths.training): fine-tuning, the site's
threshold, and a gate that judges on the site's held-out scans as well as the base test split."""
import json

import cv2
import numpy as np
import pytest

from tests.support import check_registry, workdir
from tests.synthetic import scan
from tumord.model import registry
from tumord.cli import main


def train(root, *extra):
    return main(["train", "--data", str(root / "data"), "--config", str(root / "config.yaml"), *extra])


def write_site(root, tumors: int, normals: int, seed: int = 5):
    """Scans from 'another scanner': inverted contrast, which the base model has never seen."""
    rng = np.random.default_rng(seed)
    for name, count in (("tumor", tumors), ("normal", normals)):
        (root / "training" / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            cv2.imwrite(str(root / "training" / name / f"site_{name}_{i:03d}.png"), 255 - scan(name == "tumor", rng, 64))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = workdir(tmp_path_factory.mktemp("site"))
    assert train(root) == 0  # no site scans yet: trained from scratch on the base data
    return root


def test_site_scans_adapt_the_model_and_the_gate_judges_on_them(trained, capsys):
    root = trained
    before = registry.current_version(root / "models")
    write_site(root, tumors=72, normals=48)
    capsys.readouterr()
    assert train(root, "--set", "train.finetune_epochs=8", "--set", "train.finetune_lr=0.02") == 0
    err = capsys.readouterr().err
    pointer = check_registry(root / "models")
    report = registry.read_report(root / "models", pointer["current"])
    assert report["summary"]["initialized_from"]["version"] == before  # fine-tuned, not from scratch
    site = report["site"]
    assert site["images"] == 120 and len(site["split"]["test"]) > 10
    assert 0 < site["threshold"]["value"] < 1 and site["threshold"]["chosen_on"] == "site validation part"
    assert not set(site["split"]["test"]) & set(site["split"]["train"] + site["split"]["val"])
    gate = report["gate"]["site"]
    assert gate["images"] == len(site["split"]["test"])
    # the old model cannot read inverted scans; the adapted one can, and still reads the base split
    assert gate["candidate_scores"]["balanced_accuracy"] > gate["current_scores"]["balanced_accuracy"] + 0.2
    assert report["gate"]["candidate_scores"]["accuracy"] >= report["gate"]["current_scores"]["accuracy"] - 0.02
    assert "held-out site scans" in err
    capsys.readouterr()
    assert main(["models", "list", "--config", str(root / "config.yaml")]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith(pointer["current"]))
    assert f"{gate['candidate_scores']['balanced_accuracy']:.3f}" in line


def test_a_candidate_no_better_on_the_site_is_kept(trained, capsys):
    """Fine-tuned at learning rate 0 it equals the current model on the site: not better, kept."""
    root = trained
    if not (root / "training").exists():
        write_site(root, tumors=72, normals=48)
    before = registry.current_version(root / "models")
    assert train(root, "--set", "train.finetune_lr=0", "--set", "train.precise_bn_batches=0",
                 "--set", "train.finetune_epochs=1") == 3
    assert "is not better than the current model's" in capsys.readouterr().err
    assert registry.current_version(root / "models") == before


def test_from_scratch_ignores_the_current_model(trained):
    root = trained
    assert train(root, "--from-scratch", "--output", str(root / "scratch")) == 0
    meta = json.loads((root / "scratch" / "report.json").read_text())
    assert meta["summary"]["initialized_from"] is None


def test_too_few_site_scans_of_a_class_keep_the_threshold_at_one_half(trained, capsys):
    """The same site, but the validation part must hold 60 scans of each class: none is chosen."""
    root = trained
    if not (root / "training").exists():
        write_site(root, tumors=72, normals=48)
    assert train(root, "--set", "train.finetune_epochs=1", "--set", "train.site.min_threshold_scans=60",
                 "--output", str(root / "few")) == 0
    threshold = json.loads((root / "few" / "report.json").read_text())["site"]["threshold"]
    assert threshold["value"] == 0.5 and threshold["chosen_on"].startswith("none: ")
    assert "site.threshold_kept" in capsys.readouterr().err
