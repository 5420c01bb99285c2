"""A small convolutional model with an abstention reference, made in a second for tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.synthetic import scan
from tumord.abstain.fit import fit_reference
from tumord.data.images import Preprocess
from tumord.model import checkpoint
from tumord.nn.conv import cnn_spec
from tumord.nn.network import Network

SIZE = 64


def scans(n: int, seed: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    return np.stack([scan(bool(y), rng, size) for y in labels]), labels


def cnn_model(path: Path, with_reference: bool = True, seed: int = 0) -> checkpoint.Classifier:
    """An untrained CNN whose reference holds 80 generated scans (thresholds from 40 others)."""
    net = Network((1, SIZE, SIZE), cnn_spec((4, 8, 16), 2, 0.0), np.random.default_rng(seed))
    reference = None
    if with_reference:
        train, labels = scans(80, seed + 1)
        val, _ = scans(40, seed + 2)
        reference = fit_reference(net, train, labels, np.arange(80), val, np.arange(40))
    meta = checkpoint.new_metadata(net, ("normal", "tumor"), Preprocess(size=SIZE))
    checkpoint.save(path, net, meta, reference)
    return checkpoint.load(path)
