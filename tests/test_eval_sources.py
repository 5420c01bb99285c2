"""`tumord eval` on several sources: each reported on its own, class maps, and --unseen."""
import json

import pytest

from tests.synthetic import SMALL_MLP, as_set_options, write_two_sources
from tumord.cli import main


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A model trained on source a; source b (notumor/glioma) holds copies of 6 of a's scans."""
    root = write_two_sources(tmp_path_factory.mktemp("eval"), (40, 15), copies=3)
    opts = [*as_set_options(SMALL_MLP), "--set", f"paths.cache={root / 'cache'}"]
    assert main(["train", "--data", str(root / "a"), "--output", str(root / "m"), *opts]) == 0
    return root, opts


def _eval(root, opts, capsys, *extra):
    capsys.readouterr()
    code = main(["eval", "--data", str(root / "a"), "--data", str(root / "b"), "--map", "notumor=normal",
                 "--map", "glioma=tumor", "--model", str(root / "m" / "model.npz"), *opts, *extra])
    return code, capsys.readouterr()


def test_each_source_is_reported_on_its_own_and_together(work, capsys):
    root, opts = work
    code, out = _eval(root, opts, capsys, "--json")
    assert code == 0
    result = json.loads(out.out)
    a, b = result["sources"][str(root / "a")], result["sources"][str(root / "b")]
    assert (a["n"], b["n"], result["n"]) == (80, 36, 116)
    assert b["per_class"]["tumor"]["support"] == 18  # glioma counted as tumor
    assert a["accuracy"] > 0.85 and "intervals" in b


def test_unseen_leaves_out_the_scans_the_model_learned_and_their_copies(work, capsys):
    root, opts = work
    trained_on = json.loads((root / "m" / "report.json").read_text())["split"]
    learned = {f.split("/")[1] for f in trained_on["train"] + trained_on["val"]}
    copied = sum(f"{c}_{i:03d}.png" in learned for c in ("normal", "tumor") for i in range(3))
    code, out = _eval(root, opts, capsys, "--json", "--unseen")
    b = json.loads(out.out)["sources"][str(root / "b")]
    assert code == 0 and copied > 0 and b["left_out_seen"] >= copied
    assert json.loads(out.out)["sources"][str(root / "a")]["n"] <= len(trained_on["test"]) + 2
    code, out = _eval(root, opts, capsys, "--unseen")
    assert code == 0 and "seen scans left out" in out.out and "on all 2 sources" in out.out


def test_a_class_folder_with_no_class_is_named(work, capsys):
    root, opts = work
    capsys.readouterr()
    assert main(["eval", "--data", str(root / "b"), "--model", str(root / "m" / "model.npz"), *opts]) == 2
    assert "glioma" in capsys.readouterr().err
