"""Batched prediction: network input from uint8 scans, chunks of them, a thread pool over the chunks.

It sits below training and the service, which both predict with it, so that loading a model
to classify scans pulls in no training code.
"""
from __future__ import annotations

from concurrent.futures import Executor

import numpy as np

from tumord.nn import parallel
from tumord.nn.network import Network


def to_input(images: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """uint8 (N,H,W) -> float32 network input in [0, 1], shaped (N, *input_shape).

    One pass (the cast inside the multiply; a cast then a scaling made two), in slices of images on
    the engine's threads when its products are split between them (nn/parallel.py), so that the
    conversion does not leave a core idle before a split product."""
    x = np.empty(images.shape, np.float32)
    parts = parallel.split_parts(len(images))
    bounds = [len(images) * k // parts for k in range(parts + 1)]

    def part(k: int) -> None:
        ns = slice(bounds[k], bounds[k + 1])
        np.multiply(images[ns], np.float32(1.0 / 255.0), out=x[ns], dtype=np.float32)

    parallel.run(part, parts)
    return x.reshape((len(images),) + tuple(input_shape))


def chunk_size(layers: list[dict]) -> int:
    """Scans per forward pass when classifying. Convolutional inference is fastest in small chunks
    whose im2col buffers stay in the CPU cache (docs/benchmarks.md); dense layers like big ones."""
    return 4 if any(layer.get("type") == "conv2d" for layer in layers) else 64


def predict_logits(net: Network, images: np.ndarray, idx: np.ndarray | None = None,
                   batch_size: int = 128, pool: Executor | None = None) -> np.ndarray:
    """Inference-mode logits for images[idx] (all images when idx is None), batch by batch;
    with a pool, its threads take the batches in parallel (inference keeps no shared state)."""
    idx = np.arange(len(images)) if idx is None else np.asarray(idx)

    def one(start: int) -> np.ndarray:
        return net.forward(to_input(np.asarray(images[idx[start : start + batch_size]]), net.input_shape))

    starts = range(0, len(idx), batch_size)
    return np.concatenate(list(pool.map(one, starts) if pool is not None and len(starts) > 1 else map(one, starts)))
