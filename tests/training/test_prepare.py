"""The split is fixed by train.split_seed alone, so runs with other training seeds share their held-out scans."""
import numpy as np

from tests.synthetic import write_dataset
from tumord.config import load_config
from tumord.training.pipeline import prepare


def _split(tmp_path, *settings):
    cfg = load_config(None, ["preprocess.size=32", f"paths.cache={tmp_path / 'cache'}", *settings])
    return prepare(tmp_path / "data", cfg).split


def test_the_training_seed_keeps_the_split_and_the_split_seed_changes_it(tmp_path):
    write_dataset(tmp_path / "data", per_class=30, size=48)
    base = _split(tmp_path)
    same = _split(tmp_path, "train.seed=5")
    other = _split(tmp_path, "train.split_seed=5")
    for part in ("train", "val", "test"):
        assert np.array_equal(base[part], same[part])
    assert not np.array_equal(np.sort(base["test"]), np.sort(other["test"]))
