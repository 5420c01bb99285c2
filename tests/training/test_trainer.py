"""The training loop: early stopping, keeping the best weights, schedules and augmentation wiring."""
import copy

import numpy as np
import pytest

from tests.synthetic import SMALL_MLP, scan
from tumord.config import DEFAULTS
from tumord.model.predict import predict_logits
from tumord.nn.losses import softmax, softmax_cross_entropy
from tumord.training.trainer import build_network, fit, make_lr, mixup


def _data(n=96, size=24, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = np.stack([scan(bool(y), rng, 48) for y in labels])
    import cv2

    images = np.stack([cv2.resize(i, (size, size), interpolation=cv2.INTER_AREA) for i in images])
    return images, labels


def _cfg(**train):
    cfg = copy.deepcopy(DEFAULTS)
    for section, values in SMALL_MLP.items():
        cfg[section].update(values)
    cfg["preprocess"]["size"] = 24
    cfg["model"]["hidden"] = 16
    cfg["train"].update(batch_size=16, epochs=8, patience=3, lr=0.05)
    cfg["train"]["augment"] = dict(DEFAULTS["train"]["augment"], enabled=False)
    cfg["train"].update(train)
    return cfg


# AdamW with a warm-up cosine schedule: separates generated 24x24 scans in 12 short epochs
ADAMW = dict(optimizer="adamw", lr=3e-3, weight_decay=0.01, schedule="warmup_cosine", epochs=12, patience=12)


def _fit(images, labels, n_train, cfg):
    """Trains a fresh network on the first n_train images, validating on the rest."""
    rng = np.random.default_rng(0)
    net = build_network(cfg["model"], 24, 2, rng)
    hist = fit(net, images, labels, np.arange(n_train), np.arange(n_train, len(labels)), cfg["train"], rng)
    return net, hist


def test_fit_leaves_the_network_at_its_best_validation_epoch():
    """After training, the network's validation loss is the lowest any epoch reached."""
    images, labels = _data()
    # a high rate makes later epochs worse than the best one; no final batch-norm recomputation,
    # which would move the loss a little
    net, hist = _fit(images, labels, 64, _cfg(lr=0.3, precise_bn_batches=0))
    va = np.arange(64, 96)
    loss, _ = softmax_cross_entropy(predict_logits(net, images, va), labels[va])
    assert loss == pytest.approx(min(r["val_loss"] for r in hist.epochs), rel=1e-5)
    assert hist.epochs[hist.best_epoch - 1]["best"]


def test_patience_stops_training_when_validation_stops_improving():
    """With a zero learning rate nothing improves after epoch 1, so training stops after `patience` more."""
    images, labels = _data()
    cfg = _cfg(lr=0.0, patience=2, epochs=10)
    cfg["model"]["batchnorm"] = False  # running statistics would still move at lr 0
    _, hist = _fit(images, labels, 64, cfg)
    assert hist.stopped_early and len(hist.epochs) == 3 and hist.best_epoch == 1


def test_training_with_augmentation_and_adamw_learns_the_task():
    """AdamW with a warm-up cosine schedule and augmentation separates generated scans."""
    images, labels = _data(n=160)
    cfg = _cfg(**ADAMW)
    cfg["train"]["augment"].update(enabled=True, rotate_deg=5.0, shift=0.04)
    net, _ = _fit(images, labels, 120, cfg)
    acc = (predict_logits(net, images, np.arange(120, 160)).argmax(1) == labels[120:]).mean()
    assert acc >= 0.85


@pytest.mark.parametrize("schedule", ["step", "warmup_cosine", "one_cycle"])
def test_every_schedule_starts_low_or_at_base_and_ends_below_its_peak(schedule):
    """The configured schedule is used: it peaks at most at train.lr and decays by the end."""
    cfg = _cfg(schedule=schedule, epochs=10, lr=0.1)["train"]
    lr = make_lr(cfg, steps_per_epoch=5)
    values = [lr(s) for s in range(50)]
    assert max(values) <= 0.1 + 1e-12 and values[-1] < max(values)


def test_mixup_blends_each_image_with_its_partner_in_one_share():
    x = np.random.default_rng(1).random((8, 1, 4, 4)).astype(np.float32)
    mixed, partner, share = mixup(x, np.random.default_rng(2), 0.4)
    assert 0 < share < 1 and sorted(partner) == list(range(8)) and mixed.dtype == np.float32
    np.testing.assert_allclose(mixed, share * x + (1 - share) * x[partner], rtol=1e-6)


def test_training_with_mixup_learns_the_task_with_less_confidence_on_its_training_images():
    """Mixup is applied: trained on blends and blended labels, the network is less sure of its own
    training images than without it (mixup's known effect), and still separates generated scans."""
    images, labels = _data(n=160)
    confidence = {}
    for alpha in (0.0, 1.0):
        net, _ = _fit(images, labels, 120, _cfg(**ADAMW, label_smoothing=0.0, mixup=alpha))
        acc = (predict_logits(net, images, np.arange(120, 160)).argmax(1) == labels[120:]).mean()
        assert acc >= 0.85, (alpha, acc)
        confidence[alpha] = softmax(predict_logits(net, images, np.arange(120))).max(1).mean()
    assert confidence[1.0] < confidence[0.0] - 0.02, confidence
