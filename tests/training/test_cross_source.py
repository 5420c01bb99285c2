"""Leave-one-source-out parts: which of the other source's scans a model is judged on."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.synthetic import write_dataset
from tumord.data.dedup import duplicates_any_of
from tumord.data.images import Preprocess
from tumord.data.sources import Source, load_sources, split_sources
from tumord.training.cross_source import CLASSES, Loso, scores

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def loso(tmp_path_factory):
    """As in the project's sets: every normal scan of source b is a resized copy of one of a's."""
    root = tmp_path_factory.mktemp("loso")
    write_dataset(root / "a", per_class=40, size=64, seed=1)
    write_dataset(root / "b", per_class=40, size=64, seed=2, classes=("notumor", "glioma"))
    for f in (root / "b" / "notumor").iterdir():
        f.unlink()
    for f in sorted((root / "a" / "normal").iterdir()):
        img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(root / "b" / "notumor" / f"copy_{f.stem}.jpg"), cv2.resize(img, (80, 80)))
    sources = [Source.of("a", root / "a"), Source.of("b", root / "b", class_map={"notumor": "normal", "glioma": "tumor"})]
    data = load_sources(sources, CLASSES, Preprocess(size=32), root / "cache")
    return Loso(data, split_sources(data.labels, data.source, data.groups, 0.2, 0.2, seed=0))


def _copies_of(loso, idx, originals):
    t = loso.data.thumbs
    return idx[duplicates_any_of(t[idx], t[originals], 0.95)]


def test_validation_leaves_out_copies_of_training_scans_only(loso):
    """The other source's validation part keeps its copies of the model's validation scans (so it has
    normal scans and an AUC) and drops its copies of training scans; test drops copies of both."""
    train, val = loso.part("a", "train"), loso.part("a", "val")
    parts = loso.judged_parts("b", train, val)
    d = loso.data
    b_val = loso.part("b", "val")
    copies_of_val = _copies_of(loso, b_val, val)
    assert len(copies_of_val) > 0  # the fixture's premise: shared groups lie whole in one split
    assert set(copies_of_val) <= set(parts["val"])
    assert len(_copies_of(loso, parts["val"], train)) == 0
    assert len(_copies_of(loso, parts["test"], np.concatenate([train, val]))) == 0
    # the old rule (copies of training and validation scans left out) leaves no normal scan here
    old = loso.unseen_part("b", "val", np.concatenate([train, val]))
    assert np.sum(d.labels[old] == 0) == 0
    normals = int(np.sum(d.labels[parts["val"]] == 0))
    assert normals > 0 and normals < len(parts["val"])
    rng = np.random.default_rng(0)
    m = scores(rng.normal(size=(len(parts["val"]), 2)), d.labels[parts["val"]])
    assert np.isfinite(m["auc"]) and m["normals"] == normals


def test_parts_are_described_with_their_normal_scans(loso):
    idx = loso.part("b", "val")
    assert loso.describe(idx) == f"{len(idx)} scans ({int(np.sum(loso.data.labels[idx] == 0))} normal)"


def _project_layout(root):
    """../shared/datasets in small: brain-tumor (normal, tumor) and brain-tumor-4class/{train,test}
    (notumor, glioma, meningioma, pituitary), whose train/notumor holds copies of binary normals."""
    write_dataset(root / "brain-tumor", per_class=30, size=64, seed=1)
    for part, seed in (("train", 2), ("test", 3)):
        write_dataset(root / "brain-tumor-4class" / part, per_class=12, size=64, seed=seed, classes=("notumor", "glioma"))
        for k, name in enumerate(("meningioma", "pituitary")):
            write_dataset(root / "brain-tumor-4class" / part, per_class=6, size=64, seed=seed + 10 * k + 10,
                          classes=("notumor", name))
    for i in range(20):
        img = cv2.imread(str(root / "brain-tumor" / "normal" / f"normal_{i:03d}.png"), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(root / "brain-tumor-4class" / "train" / "notumor" / f"copy_{i}.jpg"), cv2.resize(img, (80, 80)))
    return root


def test_bench_trains_judges_and_compares_runs(tmp_path):
    """bench/cross_source.py train takes --set, prints every part's scans and normals, keeps per-scan
    probabilities, and compare gives a paired AUC difference (0 for a run against itself)."""
    data = _project_layout(tmp_path / "datasets")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "bench" / "cross_source.py"), "train", "--source", "binary", "--epochs", "1",
           "--datasets", str(data), "--out", str(tmp_path / "run"), "--set", f"paths.cache={tmp_path / 'cache'}",
           "--set", "preprocess.size=32", "--set", "model.channels=[4, 8]", "--set", "train.batch_size=8"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    for part in ("training on binary: train", "4class val:", "4class test:", "AdaBN on 4class train"):
        assert re.search(re.escape(part) + r".* \d+ scans \(\d+ normal\)", r.stdout), (part, r.stdout)
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert {"4class val", "4class test", "4class val AdaBN"} <= set(result["results"])
    assert len(result["load_average"]["start"]) == 3
    r = subprocess.run([sys.executable, str(REPO / "bench" / "cross_source.py"), "compare", str(tmp_path / "run"),
                        str(tmp_path / "run"), "--resamples", "20"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["scans"] == result["results"]["4class val"]["n"] and out["difference"] == 0
