"""The data audit: confident learning on out-of-fold predictions, and scans that are not brain MR."""
import csv

import cv2
import numpy as np
import pytest

from tests.synthetic import as_set_options, scan, write_dataset
from tumord.cli import main
from tumord.labelling.sheet import TILE
from tumord.training.audit import confident_label_issues, out_of_fold_probs, scan_statistics


def test_confident_learning_flags_the_scans_whose_label_the_others_contradict():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    x = rng.standard_normal((400, 8)) + 3.0 * labels[:, None]  # two clear clusters
    wrong = rng.choice(400, 12, replace=False)
    given = labels.copy()
    given[wrong] = 1 - given[wrong]
    probs = out_of_fold_probs(x, given, np.arange(400), 2)
    suggested = confident_label_issues(probs, given)
    flagged = set(np.flatnonzero(suggested >= 0))
    assert len(set(wrong) & flagged) >= 11 and len(flagged) <= 20
    caught = [i for i in wrong if i in flagged]
    assert (suggested[caught] == labels[caught]).all()


def test_out_of_fold_predictions_never_see_the_scan_or_its_group():
    """A group of 30 identical scans labelled against their features: in-fold they would be learned."""
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(200, int), np.ones(200, int)]
    x = rng.standard_normal((400, 4)) + 3.0 * labels[:, None]
    x[:30] = 3.0  # 30 copies of a typical tumor scan, labelled normal, one group
    groups = np.arange(400)
    groups[:30] = -1
    probs = out_of_fold_probs(x, labels, groups, 2)
    assert (probs[:30, 1] > 0.9).all()
    split_apart = out_of_fold_probs(x, labels, np.arange(400), 2)  # copies in the training folds
    assert (split_apart[:30, 1] < probs[:30, 1] - 0.1).all()  # the copies taught each other the wrong label


def _ct_like(size=256) -> np.ndarray:
    """A CT slice in a brain window: a saturated skull ring around a flat gray brain."""
    img = np.zeros((size, size), np.uint8)
    cv2.ellipse(img, (size // 2, size // 2), (90, 110), 0, 0, 360, 255, -1)
    cv2.ellipse(img, (size // 2, size // 2), (78, 98), 0, 0, 360, 110, -1)
    return img


def test_ct_slices_and_colour_images_stand_out_from_mr(tmp_path):
    mr = tmp_path / "mr.png"
    cv2.imwrite(str(mr), cv2.resize(scan(True, np.random.default_rng(2), 96), (256, 256)))
    ct = tmp_path / "ct.png"
    cv2.imwrite(str(ct), _ct_like())
    colour = tmp_path / "colour.png"
    cv2.imwrite(str(colour), cv2.applyColorMap(cv2.imread(str(mr), cv2.IMREAD_GRAYSCALE), cv2.COLORMAP_JET))
    (c_mr, ct_mr), (c_ct, ct_ct), (c_col, _) = (scan_statistics(p) for p in (mr, ct, colour))
    assert ct_ct >= 0.12 > ct_mr
    assert c_col > 20 and c_mr == c_ct == 0


CNN = {"preprocess": {"size": 32}, "model": {"architecture": "cnn", "channels": [8, 16]},
       "train": {"epochs": 10, "batch_size": 16, "lr": 0.01, "augment": {"enabled": False}}}


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    write_dataset(root / "data", per_class=60, size=64)
    opts = [*as_set_options(CNN), "--set", f"paths.cache={root / 'cache'}"]
    assert main(["train", "--data", str(root / "data"), "--output", str(root / "m"), *opts]) == 0
    rng = np.random.default_rng(9)
    for i in range(4):  # tumors filed as normal
        cv2.imwrite(str(root / "data" / "normal" / f"wrong_{i}.png"), scan(True, rng, 64))
    cv2.imwrite(str(root / "data" / "normal" / "ct.png"), _ct_like())
    assert main(["audit", "--data", str(root / "data"), "--model", str(root / "m" / "model.npz"),
                 "--out", str(root / "out"), *opts]) == 0
    return root


def test_the_audit_lists_wrong_labels_and_ct_slices_in_a_csv_and_a_contact_sheet(audited):
    rows = list(csv.DictReader(open(audited / "out" / "audit.csv")))
    by_name = {r["file"].rsplit("/", 1)[1]: r for r in rows}
    wrong = [by_name.get(f"wrong_{i}.png") for i in range(4)]
    assert sum(r is not None and "label" in r["finding"] and r["suggested_label"] == "tumor" for r in wrong) >= 3
    assert "ct_like" in by_name["ct.png"]["finding"]
    assert len(rows) <= 20  # a short list a person can check, not the whole set
    sheet = cv2.imread(str(audited / "out" / "audit.png"))
    assert sheet is not None and sheet.shape[1] == 8 * TILE  # eight scans a row
