"""The reference travels inside the model file under the same rules as the weights."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from tests.abstain.models import cnn_model, scans
from tests.synthetic import tiny_model
from tumord.abstain.judge import judge
from tumord.model import checkpoint
from tumord.model.checkpoint import CheckpointError
from tumord.model.features import features_and_logits


def rewrite(path, change) -> None:
    """Rewrites the .npz with change(arrays, meta) applied, without recomputing any hash."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays.pop(checkpoint.META_KEY).tobytes())
    change(arrays, meta)
    buf = io.BytesIO()
    np.savez(buf, **arrays, **{checkpoint.META_KEY: np.frombuffer(json.dumps(meta).encode(), np.uint8)})
    path.write_bytes(buf.getvalue())


def test_a_saved_reference_loads_back_and_scores_the_same(tmp_path):
    model = cnn_model(tmp_path / "m.npz")
    again = checkpoint.load(tmp_path / "m.npz")
    images, _ = scans(6, 7)
    a, b = judge(model, images), judge(again, images)
    assert [x.distance for x in a] == [x.distance for x in b] and a[0].distance is not None
    info = again.meta["abstain"]
    assert info["k"] == 1 and info["bank"] == 80 and info["validation_scans"] == 40
    with zipfile.ZipFile(tmp_path / "m.npz") as z:  # plain arrays only: nothing that needs pickle
        assert all(n.endswith(".npy") for n in z.namelist())


def test_an_old_model_file_without_a_reference_loads_and_does_not_score(tmp_path):
    tiny_model(tmp_path / "old.npz", size=64)
    model = checkpoint.load(tmp_path / "old.npz")
    assert model.reference is None
    (j,) = judge(model, scans(1, 3)[0])
    assert j.distance is None and not j.abstained and j.fields()["feature_distance"] is None


@pytest.mark.parametrize("name", ["abstain.val_knn", "abstain.val_combined", "abstain.previous_means"])
def test_an_altered_reference_is_refused_by_its_hash(tmp_path, name):
    cnn_model(tmp_path / "m.npz")

    def shift(arrays, meta):
        arrays[name] = arrays[name] * 10  # would let everything through

    rewrite(tmp_path / "m.npz", shift)
    with pytest.raises(CheckpointError, match="abstention reference arrays do not match their recorded SHA-256"):
        checkpoint.load(tmp_path / "m.npz")


def test_reference_arrays_without_their_metadata_or_the_reverse_are_refused(tmp_path):
    cnn_model(tmp_path / "a.npz")
    rewrite(tmp_path / "a.npz", lambda arrays, meta: meta.pop("abstain"))
    with pytest.raises(CheckpointError, match="abstention reference"):
        checkpoint.load(tmp_path / "a.npz")
    cnn_model(tmp_path / "b.npz")
    rewrite(tmp_path / "b.npz", lambda arrays, meta: arrays.pop("abstain.bank"))
    with pytest.raises(CheckpointError, match="abstention reference"):
        checkpoint.load(tmp_path / "b.npz")


def _rehashed(arrays, meta):
    """As a writer would have hashed the reference arrays it wrote."""
    meta["abstain"]["sha256"] = checkpoint.weights_sha256({k: v for k, v in arrays.items() if k.startswith("abstain.")})


def test_a_file_made_before_the_combined_score_still_scores_it(tmp_path):
    """Such files keep only the two distances' sorted validation scores."""
    model = cnn_model(tmp_path / "m.npz")

    def older(arrays, meta):
        for name in ("val_combined", "val_blocks", "val_mahalanobis_previous", "previous_means", "previous_precision"):
            arrays.pop(f"abstain.{name}")
        meta["abstain"]["methods"] = ["knn", "mahalanobis"]
        _rehashed(arrays, meta)

    rewrite(tmp_path / "m.npz", older)
    old = checkpoint.load(tmp_path / "m.npz")
    images, _ = scans(6, 7)
    np.testing.assert_allclose(old.reference.score(old.reference.bank.astype(np.float32), "combined"),
                               model.reference.score(model.reference.bank.astype(np.float32), "combined"))
    assert old.reference.threshold(0.95, "combined") == pytest.approx(-np.log(0.05))
    assert judge(old, images, None)[0].distance is not None


def test_a_combined_score_list_that_does_not_fit_the_others_is_refused(tmp_path):
    cnn_model(tmp_path / "m.npz")

    def short(arrays, meta):
        arrays["abstain.val_combined"] = arrays["abstain.val_combined"][:-3]
        _rehashed(arrays, meta)

    rewrite(tmp_path / "m.npz", short)
    with pytest.raises(CheckpointError, match="validation score lists of different lengths"):
        checkpoint.load(tmp_path / "m.npz")


def without_the_block_before(arrays, meta):
    """As files were written before the reference kept the block before the last one's statistics."""
    for name in ("val_blocks", "val_mahalanobis_previous", "previous_means", "previous_precision"):
        arrays.pop(f"abstain.{name}")
    meta["abstain"]["methods"] = ["knn", "mahalanobis", "combined"]
    _rehashed(arrays, meta)


def test_a_file_without_the_block_before_judges_by_combined_and_says_so(tmp_path):
    model = cnn_model(tmp_path / "m.npz")
    rewrite(tmp_path / "m.npz", without_the_block_before)
    old = checkpoint.load(tmp_path / "m.npz")
    assert model.reference.available("blocks") and not old.reference.available("blocks")
    images = scans(6, 7)[0]
    new_verdicts, old_verdicts = judge(model, images), judge(old, images)  # the default method: blocks
    assert {j.method for j in new_verdicts} == {"blocks"} and {j.method for j in old_verdicts} == {"combined"}
    assert [j.distance for j in old_verdicts] == pytest.approx(list(old.reference.score(
        features_and_logits(old.net, images)[0], "combined")), rel=1e-3)  # float32 features, other batching
    with pytest.raises(ValueError, match="no statistics of the block before the last"):
        old.reference.score(features_and_logits(old.net, images)[0], "blocks")


def test_statistics_of_the_block_before_that_do_not_fit_are_refused(tmp_path):
    cnn_model(tmp_path / "m.npz")

    def wrong(arrays, meta):
        arrays["abstain.previous_precision"] = arrays["abstain.previous_precision"][:-1, :-1]
        _rehashed(arrays, meta)

    rewrite(tmp_path / "m.npz", wrong)
    with pytest.raises(CheckpointError, match="shapes of the block before do not fit"):
        checkpoint.load(tmp_path / "m.npz")
