"""Input-gradient saliency: which pixels most change the score of the predicted class.

Layers other than batch norm and dropout compute the same thing in training and inference
mode, so they run their training-mode forward (which keeps what backward needs) and their own
backward. Batch norm and dropout run in inference mode, where each is a fixed per-feature
scale (running statistics) or the identity, and their gradient is applied here.
"""
from __future__ import annotations

import numpy as np

from tumord.nn.layers import BatchNorm, Dropout
from tumord.nn.network import Network


def input_gradient(net: Network, x: np.ndarray, target: np.ndarray) -> np.ndarray:
    """d logit[target] / d x for each input of the batch (inference-mode network)."""
    fixed = (BatchNorm, Dropout)
    for layer in net.layers:
        x = layer.forward(x, training=not isinstance(layer, fixed))
    grad = np.zeros_like(x)
    grad[np.arange(len(x)), target] = 1.0
    for layer in reversed(net.layers):
        if isinstance(layer, BatchNorm):
            scale = layer.params["gamma"] / np.sqrt(layer.buffers["running_var"] + layer.eps)
            grad = grad * scale.reshape((1, -1) + (1,) * (grad.ndim - 2))
        elif not isinstance(layer, Dropout):
            grad = layer.backward(grad, need_input_grad=True)
    return grad.copy()  # not a layer's reused buffer
