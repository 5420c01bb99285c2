"""The network's features for abstention, with its logits, in one pass.

Two layers' features: "pooled", the global average pool's output (the last block's channel
means), and "previous", the channel means of the block before it (the output of its ReLU).
The layers run in three parts, up to that ReLU, on to the global average pool, then the rest
(dropout, the dense classifier); inference is the same function as `Network.forward`, only
split, so the logits are exactly the ones prediction gives.
"""
from __future__ import annotations

from concurrent.futures import Executor

import numpy as np

from tumord.model.predict import to_input
from tumord.nn.inference import infer
from tumord.nn.network import Network

Features = dict[str, np.ndarray]  # "pooled" (N, D), and "previous" (N, E) where the network has it


def feature_layer(net: Network) -> int | None:
    """Index of the global average pool, or None for a network without one (the MLP)."""
    kinds = [s.get("type") for s in net.spec]
    return kinds.index("globalavgpool") if "globalavgpool" in kinds else None


def previous_block_end(net: Network) -> int | None:
    """Index of the ReLU ending the block before the last one, or None (no pool, or one block)."""
    cut = feature_layer(net)
    relus = [] if cut is None else [i for i, s in enumerate(net.spec[:cut]) if s.get("type") == "relu"]
    return relus[-2] if len(relus) >= 2 else None


def features_and_logits(net: Network, images: np.ndarray, batch_size: int = 64,
                        pool: Executor | None = None) -> tuple[Features | None, np.ndarray]:
    """uint8 (N, size, size) -> (features, float32, or None for the MLP; logits (N, classes))."""
    cut, before = feature_layer(net), previous_block_end(net)
    classes = net.output_shape[0]
    if len(images) == 0:
        return (None if cut is None else {"pooled": np.zeros((0, 0), np.float32)}), np.zeros((0, classes), np.float32)

    def one(start: int):
        x = to_input(np.asarray(images[start : start + batch_size]), net.input_shape)
        if cut is None:
            return None, net.forward(x)
        feats = {}
        if before is not None:
            x = infer(net.layers[: before + 1], x)
            feats["previous"] = x.mean(axis=(2, 3), dtype=np.float32)
        feats["pooled"] = infer(net.layers[0 if before is None else before + 1 : cut + 1], x)
        return feats, infer(net.layers[cut + 1 :], feats["pooled"])

    starts = range(0, len(images), batch_size)
    parts = list(pool.map(one, starts) if pool is not None and len(starts) > 1 else map(one, starts))
    logits = np.concatenate([p[1] for p in parts])
    if cut is None:
        return None, logits
    return {k: np.concatenate([p[0][k] for p in parts]).astype(np.float32, copy=False) for k in parts[0][0]}, logits
