"""`tumord train` as a scheduled job (gate, lock, exit codes) and the `tumord models` command."""
import json
import shutil

import pytest

from tests.support import UNTRAINED, check_registry, leftovers, register_tiny, workdir
from tumord.cli import main
from tumord.model import registry


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A work folder with generated scans, its decoded-image cache warm, and one trained current model."""
    root = workdir(tmp_path_factory.mktemp("base"))
    assert train(root) == 0
    return root


@pytest.fixture
def work(base, tmp_path):
    """A private copy of the base work folder, so that each test may change the registry."""
    root = tmp_path / "w"
    shutil.copytree(base, root)
    cfg = (root / "config.yaml").read_text().replace(str(base), str(root))
    (root / "config.yaml").write_text(cfg)
    return root


def train(root, *extra):
    return main(["train", "--data", str(root / "data"), "--config", str(root / "config.yaml"), *extra])


def models(root, *args):
    return main(["models", *args[:1], "--config", str(root / "config.yaml"), *args[1:]])


class TestTrainExitCodes:
    def test_first_run_promotes_and_records_the_gate(self, base):
        """With no current model, a candidate that meets the minimums becomes current (exit 0)."""
        pointer = check_registry(base / "models")
        report = registry.read_report(base / "models", pointer["current"])
        assert report["gate"]["promote"] and report["gate"]["current"] is None
        assert report["gate"]["candidate_scores"]["accuracy"] >= 0.8

    def test_a_better_candidate_replaces_an_untrained_current_model(self, work, tmp_path):
        """A trained candidate beats a tiny untrained current model: promoted, exit 0."""
        old = register_tiny(work / "models", tmp_path)
        assert train(work) == 0
        pointer = check_registry(work / "models")
        assert pointer["current"] != old and pointer["history"][0] == old

    def test_a_worse_candidate_is_registered_but_kept_out_exit_3(self, work, capsys):
        """A candidate that learned nothing (learning rate 0, initial batch-norm statistics) fails
        the gate; the current model stays."""
        before = registry.current_version(work / "models")
        capsys.readouterr()
        assert train(work, *UNTRAINED) == 3
        err = capsys.readouterr().err
        assert f"kept: {before} stays current" in err and "below the current model's" in err
        check_registry(work / "models", expect_current=before)
        candidate = [v for v in registry.version_names(work / "models") if v != before]
        assert len(candidate) == 1
        gate = registry.read_report(work / "models", candidate[0])["gate"]
        assert not gate["promote"] and gate["reasons"]

    def test_a_strict_gate_leaves_no_current_model_rather_than_a_bad_one(self, tmp_path, capsys):
        """On an empty registry a candidate below the minimums is not made current either."""
        root = workdir(tmp_path, extra={"registry": {"gate": {"min_accuracy": 1.01, "min_images": 10}}})
        assert train(root) == 3
        assert "there is still no current model" in capsys.readouterr().err
        assert registry.current_version(root / "models") is None and len(registry.version_names(root / "models")) == 1

    def test_fine_tuning_from_the_current_model_goes_through_the_gate(self, work):
        """--init-from current trains on from the current weights and is judged against them."""
        before = registry.current_version(work / "models")
        assert train(work, "--init-from", "current", "--set", "train.epochs=3") == 0
        pointer = check_registry(work / "models")
        gate = registry.read_report(work / "models", pointer["current"])["gate"]
        assert pointer["history"][0] == before and gate["current"] == before
        assert gate["current_scores"]["n"] == gate["candidate_scores"]["n"] > 0

    def test_a_second_run_while_one_holds_the_lock_exits_4(self, work, capsys):
        """Two trainings never overlap: the second says so and changes nothing."""
        before = registry.version_names(work / "models")
        with registry.train_lock(work / "models" / "train.lock"):
            assert train(work) == 4
        assert "another `tumord train`" in capsys.readouterr().err
        assert registry.version_names(work / "models") == before and leftovers(work / "models") == []

    def test_bad_data_exits_2_and_leaves_nothing_behind(self, work, capsys):
        """A missing data folder is one clear line, exit 2, and no staging folder."""
        assert main(["train", "--data", str(work / "nope"), "--config", str(work / "config.yaml")]) == 2
        assert "no such data folder" in capsys.readouterr().err
        assert leftovers(work / "models") == []

    def test_a_run_removes_what_a_killed_run_left(self, work):
        """Stale staging folders and pointer temp files are cleaned by the next training."""
        (registry.new_staging(work / "models") / "model.npz").write_bytes(b"half a model")
        (work / "models" / ".current.json.x.tmp").write_text("{")
        assert train(work) in (0, 3)
        assert leftovers(work / "models") == []

    def test_retention_prunes_old_versions_after_a_run(self, work, tmp_path):
        """With registry.keep=0 only the current, the previous and this run's candidate remain."""
        tiny = [register_tiny(work / "models", tmp_path, seed=seed) for seed in (1, 2, 3)]
        assert train(work, "--set", "registry.keep=0", *UNTRAINED) == 3
        names = registry.version_names(work / "models")
        assert len(names) == 3 and set(tiny[1:]) < set(names)
        check_registry(work / "models", expect_current=tiny[2])

    def test_help_documents_the_exit_codes(self, capsys):
        """train --help lists every exit code."""
        with pytest.raises(SystemExit):
            main(["train", "--help"])
        text = capsys.readouterr().out
        for line in ("0  promoted", "1  unexpected", "2  bad settings", "3  kept", "4  another"):
            assert line in text


class TestModelsCommand:
    def test_list_shows_metrics_and_the_current_version(self, work, capsys):
        """models list prints a row per version; --json gives the same rows as data."""
        current = registry.current_version(work / "models")
        capsys.readouterr()
        assert models(work, "list") == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0].split()[:3] == ["VERSION", "CREATED", "ACC"]
        assert out[1].startswith(current) and out[1].endswith("current") and "passed" in out[1]
        assert models(work, "list", "--json") == 0
        rows = json.loads(capsys.readouterr().out)
        assert rows[0]["version"] == current and rows[0]["test"]["n"] > 0

    def test_promote_and_rollback_switch_the_pointer(self, work, tmp_path):
        """promote by prefix switches; rollback returns to the model before."""
        trained = registry.current_version(work / "models")
        tiny = register_tiny(work / "models", tmp_path)
        assert registry.current_version(work / "models") == tiny
        assert models(work, "promote", trained[:20]) == 0
        assert registry.current_version(work / "models") == trained
        assert models(work, "rollback") == 0
        check_registry(work / "models", expect_current=tiny)

    def test_rollback_without_history_is_exit_2(self, tmp_path, capsys):
        """Nothing to roll back to is a clear error, not a traceback."""
        root = workdir(tmp_path, per_class=2)
        register_tiny(root / "models", tmp_path)
        assert models(root, "rollback") == 2
        assert "no previous model" in capsys.readouterr().err

    def test_add_registers_and_optionally_promotes_a_model_file(self, work, tmp_path):
        """models add FILE --promote makes an imported model current."""
        from tests.synthetic import tiny_model

        meta = tiny_model(tmp_path / "imported.npz", size=32, seed=7)
        assert models(work, "add", str(tmp_path / "imported.npz"), "--promote") == 0
        check_registry(work / "models", expect_current=meta["version"])

    def test_prune_applies_the_retention_setting(self, work, tmp_path):
        """models prune removes all but registry.keep, never current or previous."""
        old = [register_tiny(work / "models", tmp_path, seed=s) for s in (1, 2, 3)]
        assert models(work, "prune", "--set", "registry.keep=0") == 0
        assert set(registry.version_names(work / "models")) == {old[1], old[2]}
