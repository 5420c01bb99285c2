"""Batch-norm statistics recomputed for the final weights ("precise BN", Wu & Johnson 2021).

During training the running mean and variance are exponential averages over batches taken while
the weights moved and the images were augmented. Predictions see fixed weights and plain images,
so the final statistics are recomputed from them: each layer's batch statistics, averaged over
passes across the training images.
"""
from __future__ import annotations

import numpy as np

from tumord.model.predict import to_input
from tumord.nn.layers import BatchNorm
from tumord.nn.network import Network


def recompute_batchnorm_statistics(net: Network, images: np.ndarray, idx: np.ndarray, batch_size: int,
                                   rng: np.random.Generator) -> int:
    """Replaces every batch-norm layer's running statistics; returns the number of batches used.

    Batches are random (class-mixed, as in training) and full-sized: a layer normalizes with its
    batch's statistics in training, and those are what is averaged.
    """
    layers = [layer for layer in net.layers if isinstance(layer, BatchNorm)]
    batches = len(idx) // batch_size
    if not layers or batches == 0:
        return 0
    momenta = [layer.momentum for layer in layers]
    sums = [[np.zeros_like(layer.buffers["running_mean"]), np.zeros_like(layer.buffers["running_var"])]
            for layer in layers]
    order = np.asarray(idx)[rng.permutation(len(idx))]
    try:
        for layer in layers:
            layer.momentum = 1.0  # the running statistics become the batch's own
        for b in range(batches):
            batch = np.sort(order[b * batch_size : (b + 1) * batch_size])
            net.forward(to_input(np.asarray(images[batch]), net.input_shape), training=True)
            for (mean, var), layer in zip(sums, layers):
                mean += layer.buffers["running_mean"]
                var += layer.buffers["running_var"]
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    for (mean, var), layer in zip(sums, layers):
        layer.buffers["running_mean"][...] = mean / batches
        layer.buffers["running_var"][...] = var / batches
    return batches
