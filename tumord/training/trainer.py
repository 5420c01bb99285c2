"""The training loop: mini-batches, augmentation, learning-rate schedule, early stopping.

It takes arrays and settings, never files: the `train` command prepares the data.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tumord.model.predict import predict_logits, to_input
from tumord.nn.losses import softmax_cross_entropy
from tumord.nn.network import Network, mlp_spec
from tumord.nn.optim import make_optimizer
from tumord.nn.schedules import make_schedule
from tumord.training.precise_bn import recompute_batchnorm_statistics


def build_network(model_cfg: dict, size: int, classes: int, rng: np.random.Generator) -> Network:
    if model_cfg["architecture"] == "cnn":
        from tumord.nn.conv import cnn_spec

        spec = cnn_spec(tuple(model_cfg["channels"]), classes, model_cfg["dropout"])
    else:
        spec = mlp_spec(model_cfg["hidden"], classes, model_cfg["dropout"], model_cfg["batchnorm"])
    return Network((1, size, size), spec, rng)


def make_lr(cfg: dict, steps_per_epoch: int) -> Callable[[int], float]:
    """Learning rate at a global step, from the train settings."""
    lr, total = cfg["lr"], cfg["epochs"] * steps_per_epoch
    if cfg["schedule"] == "step":
        return make_schedule("step", base_lr=lr, decay_per_epoch=cfg["lr_decay"], steps_per_epoch=steps_per_epoch)
    if cfg["schedule"] == "warmup_cosine":
        return make_schedule("warmup_cosine", base_lr=lr, warmup_steps=cfg["warmup_epochs"] * steps_per_epoch,
                             total_steps=total, min_lr=lr * 1e-3)
    return make_schedule("one_cycle", max_lr=lr, total_steps=total)


def mixup(x: np.ndarray, rng: np.random.Generator, alpha: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Mixup (Zhang et al. 2018): the batch blended with a shuffled copy of itself, in a share
    drawn from Beta(alpha, alpha). Returns the blend, the partner of each image, and the share."""
    share = float(rng.beta(alpha, alpha))
    partner = rng.permutation(len(x))
    return share * x + (1 - share) * x[partner], partner, share


def _bn_sample(train_idx: np.ndarray, count: int, weights: np.ndarray | None, rng) -> np.ndarray:
    """Images for batch-norm statistics, drawn as training draws them (so, with site weights, the
    statistics are those of the mix the network trained on, not of the larger public sources)."""
    if weights is None:
        return rng.choice(train_idx, min(len(train_idx), count), replace=False)
    return rng.choice(train_idx, count, p=weights)


@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    seconds: float = 0.0


def fit(net: Network, images: np.ndarray, labels: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray,
        cfg: dict, rng: np.random.Generator, on_epoch: Callable[[dict], None] = lambda e: None,
        weights: np.ndarray | None = None, draws: int | None = None) -> History:
    """Trains in place on images[train_idx]; leaves the network at its best validation-loss epoch.

    With weights (a probability per training image), each epoch draws `draws` images (default
    len(train_idx)) with replacement in those proportions instead of a permutation (site-aware
    sampling).

    Images stay uint8 (often a memory map) and are indexed per batch, never copied whole.
    """
    bs = cfg["batch_size"]
    y_val = labels[val_idx]
    per_epoch = len(train_idx) if weights is None or draws is None else draws
    steps = max(1, per_epoch // bs)  # drop the ragged last batch: batch norm needs a real batch
    lr_at = make_lr(cfg, steps)
    opt_kwargs = {"lr": cfg["lr"], "weight_decay": cfg["weight_decay"]}
    if cfg["optimizer"] == "sgd":
        opt_kwargs["momentum"] = cfg["momentum"]
    opt = make_optimizer(cfg["optimizer"], **opt_kwargs)
    aug = cfg["augment"]
    augment = None
    if aug["enabled"]:
        from tumord.data.augment import augment_batch

        from tumord.data.domain_augment import domain_augment

        jitter = {k: aug[k] for k in ("flip", "rotate_deg", "scale", "shift", "brightness", "contrast")}
        domain = {k: aug[k] for k in ("gamma", "blur", "noise", "bias_field")}
        if any(domain.values()):
            augment = lambda imgs: domain_augment(augment_batch(imgs, rng, **jitter), rng, **domain)  # noqa: E731
        else:
            augment = lambda imgs: augment_batch(imgs, rng, **jitter)  # noqa: E731
    hist, best_loss, best_state, waited = History(), np.inf, None, 0
    start = time.monotonic()
    for epoch in range(1, cfg["epochs"] + 1):
        t0 = time.monotonic()
        order = train_idx[rng.permutation(len(train_idx)) if weights is None else
                          rng.choice(len(train_idx), per_epoch, p=weights)]
        losses, correct = [], 0
        for s in range(steps):
            idx = np.sort(order[s * bs : (s + 1) * bs])  # sorted: faster reads from a memory map
            imgs = np.asarray(images[idx])
            if augment is not None:
                imgs = augment(imgs)
            opt.lr = lr_at((epoch - 1) * steps + s)
            x, y = to_input(imgs, net.input_shape), labels[idx]
            if cfg["mixup"]:
                x, partner, share = mixup(x, rng, cfg["mixup"])
            logits = net.forward(x, training=True)
            loss, grad = softmax_cross_entropy(logits, y, cfg["label_smoothing"])
            if cfg["mixup"]:  # the loss of a mix is the same mix of the two images' losses
                loss_b, grad_b = softmax_cross_entropy(logits, y[partner], cfg["label_smoothing"])
                loss, grad = share * loss + (1 - share) * loss_b, share * grad + (1 - share) * grad_b
            net.backward(grad)
            opt.step(net.named_parameters())
            losses.append(loss)
            correct += int((logits.argmax(1) == y).sum())
        if cfg["precise_bn_batches"]:
            recompute_batchnorm_statistics(net, images, _bn_sample(train_idx, cfg["precise_bn_batches"] * bs,
                                                                   weights, rng), bs, rng)
        val_logits = predict_logits(net, images, val_idx)
        val_loss, _ = softmax_cross_entropy(val_logits, y_val)
        row = {
            "epoch": epoch, "train_loss": float(np.mean(losses)), "train_accuracy": correct / (steps * bs),
            "val_loss": float(val_loss), "val_accuracy": float((val_logits.argmax(1) == y_val).mean()),
            "lr": opt.lr, "seconds": time.monotonic() - t0,
        }
        if not np.isfinite(row["train_loss"]):
            raise FloatingPointError(f"training diverged at epoch {epoch} (loss {row['train_loss']}); lower train.lr")
        improved = val_loss < best_loss - 1e-4
        if improved:
            best_loss, best_state, waited, hist.best_epoch = val_loss, net.copy_state(), 0, epoch
        else:
            waited += 1
        elapsed = time.monotonic() - start
        row["eta_seconds"] = elapsed / epoch * (cfg["epochs"] - epoch)
        row["best"] = improved
        hist.epochs.append(row)
        on_epoch(row)
        if waited >= cfg["patience"]:
            hist.stopped_early = True
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    if cfg["precise_bn_batches"]:
        final = train_idx if weights is None else _bn_sample(train_idx, per_epoch, weights, rng)
        recompute_batchnorm_statistics(net, images, final, bs, rng)
    hist.seconds = time.monotonic() - start
    return hist
