"""The pieces of site-aware retraining: sampling weights, the site's threshold, folding it in."""
import numpy as np
import pytest

from tumord.nn.losses import softmax
from tumord.nn.network import Network, mlp_spec
from tumord.training.site import choose_threshold, finetune_draws, fold_threshold, list_site, sampling_weights


def test_site_scans_get_their_share_and_every_class_an_equal_part():
    """200 site scans among 3000 (9 to 1 tumor) are drawn half the time, each class half of that."""
    labels = np.r_[np.zeros(1400, int), np.ones(1600, int), np.zeros(20, int), np.ones(180, int)]
    site = np.r_[np.zeros(3000, bool), np.ones(200, bool)]
    w = sampling_weights(labels, site, 0.5)
    assert w.sum() == pytest.approx(1.0)
    assert w[site].sum() == pytest.approx(0.5)
    assert w[site & (labels == 0)].sum() == pytest.approx(0.25) == w[site & (labels == 1)].sum()
    assert w[~site & (labels == 0)].sum() == pytest.approx(0.25)


def test_a_site_with_one_class_so_far_gives_it_the_whole_share():
    labels = np.r_[np.zeros(10, int), np.ones(10, int), np.ones(5, int)]
    site = np.r_[np.zeros(20, bool), np.ones(5, bool)]
    assert sampling_weights(labels, site, 0.3)[site].sum() == pytest.approx(0.3)


def test_the_threshold_maximizes_balanced_accuracy_not_accuracy():
    """9 tumors to 1 normal, the tumors scored low: the best balanced accuracy needs a low threshold."""
    rng = np.random.default_rng(0)
    positive = np.r_[np.ones(90, bool), np.zeros(10, bool)]
    p = np.r_[rng.uniform(0.2, 0.45, 90), rng.uniform(0.0, 0.15, 10)]
    t = choose_threshold(p, positive)
    assert 0.15 <= t <= 0.2
    assert ((p >= t) == positive).all()
    assert choose_threshold(p[:90], positive[:90]) == 0.5  # one class only: nothing to choose on


def test_a_threshold_is_not_chosen_on_a_handful_of_one_class():
    """The same scores: 10 normals choose a threshold; with 10 required, 9 normals keep 0.5."""
    rng = np.random.default_rng(0)
    positive = np.r_[np.ones(90, bool), np.zeros(10, bool)]
    p = np.r_[rng.uniform(0.2, 0.45, 90), rng.uniform(0.0, 0.15, 10)]
    assert choose_threshold(p, positive, min_per_class=10) < 0.2
    assert choose_threshold(p[1:], positive[1:], min_per_class=90) == 0.5  # 89 tumors
    assert choose_threshold(p[:99], positive[:99], min_per_class=10) == 0.5  # 9 normals


def test_a_folded_threshold_makes_argmax_decide_at_it():
    rng = np.random.default_rng(1)
    net = Network((1, 8, 8), mlp_spec(hidden=8), rng)
    x = rng.random((200, 1, 8, 8), dtype=np.float32)
    temperature = 1.7
    p = softmax(net.forward(x) / temperature)[:, 1]
    threshold = float(np.quantile(p, 0.3)) + 1e-4  # off-centre, so the bias must move
    fold_threshold(net, threshold, temperature, negative=0, positive=1)
    assert ((net.forward(x).argmax(1) == 1) == (p >= threshold)).all()
    assert 0 < (p >= threshold).sum() < len(p)  # the test means something: both answers occur


def test_site_folders_may_lack_a_class_but_not_have_strange_ones(tmp_path):
    (tmp_path / "tumor").mkdir()
    (tmp_path / "tumor" / "a.png").write_bytes(b"x")
    (tmp_path / "tumor" / "a.png.feedback.json").write_text("{}")  # provenance is not a scan
    listing = list_site(tmp_path, ["normal", "tumor"])
    assert [p.name for p in listing.files] == ["a.png"] and listing.labels == [1]
    assert list_site(tmp_path / "nothing", ["normal", "tumor"]) is None
    (tmp_path / "glioma").mkdir()
    with pytest.raises(ValueError, match="glioma"):
        list_site(tmp_path, ["normal", "tumor"])


def test_a_fine_tuning_epoch_shows_each_site_scan_about_twice():
    assert finetune_draws(160, 0.5, 3000, 32) == 640
    assert finetune_draws(5, 0.5, 3000, 32) == 256  # at least 8 batches
    assert finetune_draws(2000, 0.5, 3000, 32) == 3000  # never more than a plain epoch
