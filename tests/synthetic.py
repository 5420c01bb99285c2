"""Generated scans for tests: a textured disc (a 'head'), with a bright blob for 'tumor'."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from tumord.data.images import Preprocess
from tumord.model import checkpoint
from tumord.nn.network import Network, mlp_spec


# a small fully connected network on 32x32 scans with plain SGD: learns generated scans in a second
SMALL_MLP = {
    "preprocess": {"size": 32},
    "model": {"architecture": "mlp", "hidden": 32},
    "train": {"batch_size": 16, "epochs": 12, "lr": 0.02, "optimizer": "sgd", "schedule": "step",
              "weight_decay": 0.0, "label_smoothing": 0.0, "mixup": 0.0, "patience": 8, "augment": {"enabled": False}},
}


def as_set_options(settings: dict, prefix: str = "") -> list[str]:
    """{"train": {"lr": 0.1}} -> ["--set", "train.lr=0.1"]"""
    out = []
    for k, v in settings.items():
        if isinstance(v, dict):
            out += as_set_options(v, f"{prefix}{k}.")
        else:
            out += ["--set", f"{prefix}{k}={str(v).lower() if isinstance(v, bool) else v}"]
    return out


def scan(tumor: bool, rng: np.random.Generator, size: int = 96) -> np.ndarray:
    img = np.zeros((size, size), np.float32)
    c = size / 2 + rng.uniform(-size * 0.12, size * 0.12, 2)
    r = size * rng.uniform(0.25, 0.38)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - c[0]) ** 2 + (xx - c[1]) ** 2 < r**2
    img[disc] = 90 + 25 * rng.standard_normal(disc.sum())
    for _ in range(rng.integers(4, 9)):  # dark and light folds, so that no two scans are alike
        centre = tuple(int(v) for v in c + rng.uniform(-r * 0.6, r * 0.6, 2))[::-1]
        axes = tuple(int(v) for v in rng.uniform(size * 0.03, size * 0.15, 2))
        cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, float(rng.uniform(0, 160)), -1)
    img = cv2.GaussianBlur(img, (0, 0), 1.5)
    if tumor:
        angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0, r * 0.5)
        b = c + dist * np.array([np.sin(angle), np.cos(angle)])
        br = size * rng.uniform(0.08, 0.14)
        blob = np.exp(-((yy - b[0]) ** 2 + (xx - b[1]) ** 2) / (2 * br**2))
        img += 140 * blob
    return np.clip(img, 0, 255).astype(np.uint8)


def write_dataset(root: Path, per_class: int = 20, size: int = 96, seed: int = 0,
                  classes=("normal", "tumor")) -> Path:
    """class folders of PNGs; the last class name gets the blob."""
    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cv2.imwrite(str(root / name / f"{name}_{i:03d}.png"), scan(name != classes[0], rng, size))
    return root


def tiny_model(path: Path, size: int = 32, classes=("normal", "tumor"), seed: int = 0) -> dict:
    """An untrained but valid model file, quick to make, for tests that need any model."""
    net = Network((1, size, size), mlp_spec(hidden=16, classes=len(classes)), np.random.default_rng(seed))
    meta = checkpoint.new_metadata(net, classes, Preprocess(size=size))
    return checkpoint.save(path, net, meta)


def write_two_sources(root: Path, per_class: tuple[int, int], copies: int) -> Path:
    """Source root/a (normal, tumor) and root/b (notumor, glioma: another collection's names);
    b also holds resized JPEG copies of a's first `copies` scans per class, named copy_<i>.jpg."""
    write_dataset(root / "a", per_class=per_class[0], size=64, seed=1)
    write_dataset(root / "b", per_class=per_class[1], size=64, seed=2, classes=("notumor", "glioma"))
    for i in range(copies):
        for src, dst in (("normal", "notumor"), ("tumor", "glioma")):
            img = cv2.imread(str(root / "a" / src / f"{src}_{i:03d}.png"), cv2.IMREAD_GRAYSCALE)
            cv2.imwrite(str(root / "b" / dst / f"copy_{i}.jpg"), cv2.resize(img, (80, 80)))
    return root
