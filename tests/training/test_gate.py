"""The promotion gate: the decision rule and the choice of fair held-out images."""
import json
import math

import numpy as np
import pytest

from tests.support import SMALL, register_tiny
from tests.synthetic import tiny_model, write_dataset
from tumord.config import validate
from tumord.model import registry
from tumord.training.gate import judge, run_gate, unseen_by
from tumord.training.pipeline import train

GATE = {"min_accuracy": 0.8, "min_sensitivity": 0.8, "max_drop": 0.02, "min_images": 10}


def scores(accuracy, sensitivity, n=50):
    return {"accuracy": accuracy, "sensitivity": sensitivity, "n": n}


class TestJudge:
    def test_a_good_candidate_passes(self):
        """Above both minimums and within the margin of the current model: no reasons."""
        assert judge(scores(0.9, 0.9), scores(0.91, 0.9), GATE) == []
        assert judge(scores(0.9, 0.9), None, GATE) == []

    def test_minimums_apply_without_a_current_model(self):
        """Accuracy and sensitivity below their minimums are both named."""
        reasons = judge(scores(0.7, 0.75), None, GATE)
        assert len(reasons) == 2 and "accuracy 0.700 is below" in reasons[0] and "sensitivity" in reasons[1]

    def test_a_drop_beyond_the_margin_keeps_the_current_model(self):
        """Worse than the current model by more than max_drop in sensitivity is a reason."""
        reasons = judge(scores(0.95, 0.85), scores(0.95, 0.9), GATE)
        assert reasons == ["sensitivity 0.850 is more than 0.020 below the current model's 0.900"]

    def test_nan_or_no_images_never_passes(self):
        """Undefined scores and an empty comparison set fail the gate."""
        assert judge(scores(math.nan, 0.9), None, GATE)
        assert judge(scores(0.9, 0.9, n=0), None, GATE) == ["no held-out images to judge the candidate on"]


def test_unseen_by_drops_whole_near_duplicate_groups():
    """A test image is excluded when any image of its group was seen by the current model."""
    groups = np.array([0, 0, 2, 3, 3, 5])
    assert unseen_by(test=[1, 2, 4, 5], seen=[0, 3], groups=groups) == [2, 5]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Data, and two small models trained with different train.split_seed values (so their splits overlap)."""
    root = tmp_path_factory.mktemp("gate")
    write_dataset(root / "data", per_class=60, size=64)
    out = {}
    for seed in (0, 1):
        cfg = settings(root, seed=seed, split_seed=seed)
        staging = root / f"model{seed}"
        staging.mkdir()
        out[seed] = train(root / "data", cfg, staging)["report"]
    return root, out


def settings(root, **train_overrides):
    raw = json.loads(json.dumps(SMALL))
    raw["train"].update(train_overrides)
    raw["paths"] = {"models": str(root / "models"), "cache": str(root / "cache")}
    return validate(raw)


def make_current(root, models_dir, seed=0):
    version = registry.add_model(models_dir, root / f"model{seed}" / "model.npz")
    registry.promote(models_dir, version)
    return version


class TestRunGate:
    def test_images_the_current_model_trained_on_are_left_out(self, trained, tmp_path):
        """Both models are scored only on candidate test images outside the current model's train/val groups."""
        root, reports = trained
        models = tmp_path / "models"
        current = make_current(root, models)
        cfg = settings(root, seed=1, split_seed=1)
        cfg["registry"]["gate"]["min_images"] = 1
        gate = run_gate(root / "model1" / "model.npz", reports[1], root / "data", models, cfg)
        seen = set(reports[0]["split"]["train"]) | set(reports[0]["split"]["val"])
        overlap = [f for f in reports[1]["split"]["test"] if f in seen]
        assert overlap, "the two splits were meant to overlap"
        assert gate["current"] == current
        assert gate["excluded_seen_by_current"] >= len(overlap)
        assert gate["images"] == len(reports[1]["split"]["test"]) - gate["excluded_seen_by_current"]
        assert gate["candidate_scores"]["n"] == gate["current_scores"]["n"] == gate["images"]
        assert gate["notes"] == []

    def test_too_few_unseen_images_falls_back_to_the_whole_split_with_a_note(self, trained, tmp_path):
        """Below min_images the whole test split is used and the verdict says so."""
        root, reports = trained
        models = tmp_path / "models"
        make_current(root, models)
        cfg = settings(root, seed=1, split_seed=1)
        cfg["registry"]["gate"]["min_images"] = 1000
        gate = run_gate(root / "model1" / "model.npz", reports[1], root / "data", models, cfg)
        assert gate["images"] == len(reports[1]["split"]["test"]) and gate["excluded_seen_by_current"] == 0
        assert "can favour it" in gate["notes"][0]

    def test_a_better_candidate_beats_an_untrained_current_model(self, trained, tmp_path):
        """A current model without a report is scored on the whole split; the trained candidate wins."""
        root, reports = trained
        models = tmp_path / "models"
        register_tiny(models, tmp_path)
        gate = run_gate(root / "model0" / "model.npz", reports[0], root / "data", models, settings(root))
        assert gate["promote"], gate
        assert gate["candidate_scores"]["accuracy"] > gate["current_scores"]["accuracy"]
        assert "training images are unknown" in gate["notes"][0]

    def test_a_current_model_with_other_preprocessing_sees_the_same_images(self, trained, tmp_path):
        """A current model at another resolution is scored on the same files, decoded at its size."""
        root, reports = trained
        models = tmp_path / "models"
        tiny_model(tmp_path / "small.npz", size=16)
        registry.promote(models, registry.add_model(models, tmp_path / "small.npz"))
        gate = run_gate(root / "model0" / "model.npz", reports[0], root / "data", models, settings(root))
        assert gate["current_scores"]["n"] == gate["candidate_scores"]["n"] == len(reports[0]["split"]["test"])
        assert gate["promote"]

    def test_a_candidate_with_other_classes_is_never_promoted_automatically(self, trained, tmp_path):
        """A change of the class set needs a person: the gate keeps the current model."""
        root, reports = trained
        models = tmp_path / "models"
        tiny_model(tmp_path / "other.npz", size=32, classes=("glioma", "normal", "tumor"))
        registry.promote(models, registry.add_model(models, tmp_path / "other.npz"))
        gate = run_gate(root / "model0" / "model.npz", reports[0], root / "data", models, settings(root))
        assert not gate["promote"] and "differ from the current model's" in gate["reasons"][-1]

    def test_an_unloadable_current_model_is_replaced_on_the_minimums_alone(self, trained, tmp_path):
        """A broken current model cannot be compared; a candidate that meets the minimums is promoted."""
        root, reports = trained
        models = tmp_path / "models"
        version = make_current(root, models)
        (registry.versions_dir(models) / version / "model.npz").write_bytes(b"broken")
        gate = run_gate(root / "model0" / "model.npz", reports[0], root / "data", models, settings(root))
        assert gate["promote"] and gate["current_scores"] is None
        assert "cannot be loaded" in gate["notes"][0]
