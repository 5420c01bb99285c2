"""Building a model's abstention reference from its training and validation scans.

`tumord train` calls `fit_reference` for every new model; `tumord add-reference` calls it for a
model trained before abstention existed, on the split its report.json records, without retraining.
"""
from __future__ import annotations

import numpy as np

from tumord.model.features import Features, feature_layer, features_and_logits
from tumord.nn.feature_distance import Reference, build
from tumord.nn.network import Network

K = 1  # nearest neighbour: the best separation of far-out inputs measured (docs/abstention.md)


def layer_features(net: Network, images: np.ndarray, idx: np.ndarray, chunk: int = 512) -> Features:
    """Features of images[idx] (`features_and_logits`), read chunk by chunk (images may be a memory map)."""
    idx = np.sort(np.asarray(idx))
    parts = [features_and_logits(net, np.asarray(images[idx[s : s + chunk]]))[0] for s in range(0, len(idx), chunk)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def fit_reference(net: Network, images: np.ndarray, labels: np.ndarray, train_idx: np.ndarray,
                  val_images: np.ndarray, val_idx: np.ndarray, k: int = K) -> Reference | None:
    """None for a network without pooled features (the MLP): its models do not score."""
    if feature_layer(net) is None or len(train_idx) == 0 or len(val_idx) == 0:
        return None
    train_idx = np.sort(np.asarray(train_idx))
    train = layer_features(net, images, train_idx)
    val = layer_features(net, val_images, val_idx)
    return build(train, np.asarray(labels)[train_idx], val, net.output_shape[0], k=k)
