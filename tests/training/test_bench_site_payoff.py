"""The simulation helpers of bench/site_payoff.py and bench/cross_source.py (docs/cross-source.md).

The site's labelled pool is thinned to the set share of normal scans; a base model can be trained
without a share of the near-duplicate groups two sources share (so the other source keeps unseen
copies of them to label); `tumord audit` findings are read from its CSV for exclusion.
"""
import csv
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import cross_source  # noqa: E402
import site_payoff  # noqa: E402


def test_thin_pool_keeps_every_tumor_and_drops_normals_to_the_share():
    labels = np.array([0] * 50 + [1] * 90)
    pool = np.arange(140)
    thinned = site_payoff.thin_pool(pool, labels, 0.1, np.random.default_rng(0))
    assert (labels[thinned] == 1).sum() == 90
    assert (labels[thinned] == 0).sum() == 10  # 9 tumors to 1 normal
    assert len(np.unique(thinned)) == len(thinned) and np.isin(thinned, pool).all()


def test_thin_pool_leaves_a_pool_already_below_the_share():
    labels = np.array([0] * 3 + [1] * 90)
    thinned = site_payoff.thin_pool(np.arange(93), labels, 0.1, np.random.default_rng(0))
    assert len(thinned) == 93


def test_hold_out_shared_drops_whole_shared_groups_only():
    # groups 0-3 span both sources, 4-7 only source 0; idx is source 0's scans
    groups = np.array([0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3])
    source = np.array([0] * 8 + [1] * 4)
    loso = SimpleNamespace(data=SimpleNamespace(groups=groups, source=source))
    idx = np.arange(8)
    kept, held = cross_source.hold_out_shared(loso, idx, 0.5)
    assert len(held) == 2 and set(groups[held]) <= {0, 1, 2, 3}
    assert sorted(np.r_[kept, held]) == list(idx)
    again, _ = cross_source.hold_out_shared(loso, idx, 0.5)
    assert (again == kept).all()  # site_payoff recomputes the same split from the model's metadata


def test_audit_findings_are_the_flagged_rows_of_the_csv(tmp_path):
    f = tmp_path / "audit.csv"
    with open(f, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label", "finding"])
        w.writerow([str(tmp_path / "normal" / "ct, 1.jpg"), "normal", "ct_like"])
        w.writerow([str(tmp_path / "tumor" / "a.jpg"), "tumor", ""])
    assert cross_source.audit_findings([f]) == {(tmp_path / "normal" / "ct, 1.jpg").resolve()}


def _datasets(root: Path) -> Path:
    """brain-tumor (normal, tumor) and brain-tumor-4class/{train,test} (notumor, glioma); the
    4-class training part holds copies of 12 binary normal scans, so the two share groups."""
    import cv2

    from tests.synthetic import write_dataset

    write_dataset(root / "brain-tumor", per_class=40, size=72, seed=1)
    write_dataset(root / "brain-tumor-4class" / "train", per_class=30, size=72, seed=2, classes=("notumor", "glioma"))
    write_dataset(root / "brain-tumor-4class" / "test", per_class=10, size=72, seed=3, classes=("notumor", "glioma"))
    for i in range(12):
        img = cv2.imread(str(root / "brain-tumor" / "normal" / f"normal_{i:03d}.png"), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(root / "brain-tumor-4class" / "train" / "notumor" / f"copy_{i}.jpg"), cv2.resize(img, (80, 80)))
    return root


def test_the_two_scripts_run_end_to_end_on_generated_sources(tmp_path):
    """Base without half the shared groups, alone without an audit finding, then k = 0 and 8."""
    import json
    import subprocess

    from tests.synthetic import SMALL_MLP, as_set_options

    data = _datasets(tmp_path / "datasets")
    opts = [*as_set_options(SMALL_MLP), "--set", f"paths.cache={tmp_path / 'cache'}", "--datasets", str(data)]
    bench = Path(site_payoff.__file__).parent
    audit = tmp_path / "audit.csv"
    audit.write_text(f"file,label,finding\n{data / 'brain-tumor' / 'normal' / 'normal_039.png'},normal,ct_like\n")

    def run(script, *args):
        return subprocess.run([sys.executable, str(bench / script), *args, *opts], capture_output=True, text=True,
                              timeout=600, check=True)

    run("cross_source.py", "train", "--source", "4class", "--epochs", "2", "--hold-out-shared", "0.5",
        "--no-adabn", "--out", str(tmp_path / "base"))
    run("cross_source.py", "train", "--source", "binary", "--epochs", "2", "--no-adabn", "--exclude", str(audit),
        "--out", str(tmp_path / "alone"))
    base = json.loads((tmp_path / "base" / "result.json").read_text())
    alone = json.loads((tmp_path / "alone" / "result.json").read_text())
    assert base["held_out_shared"] > 0 and "binary test AdaBN" not in base["results"]
    assert alone["excluded_by_audit"] in (0, 1)  # 1 when the flagged scan fell in the training part
    run("site_payoff.py", "--model", str(tmp_path / "base" / "model.npz"), "--alone",
        str(tmp_path / "alone" / "model.npz"), "--k", "0", "8", "--select", "random", "review",
        "--set", "train.finetune_epochs=1", "--out", str(tmp_path / "payoff"))
    r = json.loads((tmp_path / "payoff" / "results.json").read_text())
    assert (r["base_source"], r["site"]) == ("4class", "binary")
    assert r["pool_normals"] <= 0.1 * r["pool"] + 1e-9 and r["pool_normals"] > 0  # held-out copies: unseen normals
    rows = {(row["k"], row["select"]): row for row in r["rows"]}
    assert {(0, "none"), (None, "trained on the binary set alone"), (8, "random"), (8, "review")} <= set(rows)
    for key in ((8, "random"), (8, "review")):
        row = rows[key]
        assert row["site_train"] + row["site_val"] == 8 and row["fine_tune_wall_seconds"] >= 0
        assert 0 <= row["balanced_accuracy"] <= 1 and row["n"] == r["test"]
    png = tmp_path / "payoff.png"
    subprocess.run([sys.executable, str(bench / "site_payoff.py"), "--plot", str(tmp_path / "payoff" / "results.json"),
                    "--png", str(png)], check=True, timeout=120)
    assert png.stat().st_size > 0
