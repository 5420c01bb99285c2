"""The network's pooled features (the global average pool's output) with its logits, in one pass.

The layers up to and including the global average pool run first; the rest (dropout, the dense
classifier) run on their output. Inference is the same function as `Network.forward`, only
split in two, so the logits are exactly the ones prediction gives.
"""
from __future__ import annotations

from concurrent.futures import Executor

import numpy as np

from tumord.model.predict import to_input
from tumord.nn.inference import infer
from tumord.nn.network import Network


def feature_layer(net: Network) -> int | None:
    """Index of the global average pool, or None for a network without one (the MLP)."""
    kinds = [s.get("type") for s in net.spec]
    return kinds.index("globalavgpool") if "globalavgpool" in kinds else None


def features_and_logits(net: Network, images: np.ndarray, batch_size: int = 64,
                        pool: Executor | None = None) -> tuple[np.ndarray | None, np.ndarray]:
    """uint8 (N, size, size) -> (pooled features (N, D) float32 or None, logits (N, classes))."""
    cut = feature_layer(net)
    classes = net.output_shape[0]
    if len(images) == 0:
        return (None if cut is None else np.zeros((0, 0), np.float32)), np.zeros((0, classes), np.float32)

    def one(start: int):
        x = to_input(np.asarray(images[start : start + batch_size]), net.input_shape)
        if cut is None:
            return None, net.forward(x)
        feats = infer(net.layers[: cut + 1], x)
        return feats, infer(net.layers[cut + 1 :], feats)

    starts = range(0, len(images), batch_size)
    parts = list(pool.map(one, starts) if pool is not None and len(starts) > 1 else map(one, starts))
    logits = np.concatenate([p[1] for p in parts])
    feats = None if cut is None else np.concatenate([p[0] for p in parts]).astype(np.float32, copy=False)
    return feats, logits
