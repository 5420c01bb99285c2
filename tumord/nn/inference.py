"""Inference: the function the layers' forward passes compute, with fewer passes over memory.

- A convolution followed by batch norm runs as one convolution, the normalization folded into
  its kernel and bias.
- ReLU followed by max pooling runs as the pooling, then ReLU in place on its 4x smaller
  result: both are monotone, so max(relu(x)) = relu(max(x)).
Their effect on prediction time is measured in docs/design.md (Inference).
"""
from __future__ import annotations

import numpy as np

from tumord.nn.conv import Conv2D, MaxPool2D
from tumord.nn.layers import BatchNorm, Layer, ReLU


def infer(layers: list[Layer], x: np.ndarray) -> np.ndarray:
    i = 0
    while i < len(layers):
        layer, following = layers[i], layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, Conv2D) and isinstance(following, BatchNorm):
            x = layer.forward_folded(x, *following.inference_affine())
            i += 2
        elif isinstance(layer, ReLU) and isinstance(following, MaxPool2D):
            x = following.forward(x)  # a new array: safe to rectify in place
            np.maximum(x, 0, out=x)
            i += 2
        else:
            x = layer.forward(x)
            i += 1
    return x
