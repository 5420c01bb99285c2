"""Layers with one contract: forward keeps what backward needs, backward(grad_out) -> grad_in.

Trainable parameters and their gradients live in matching dicts (`params`, `grads`);
non-trainable state (batch-norm running statistics) lives in `buffers`. Optimizer state
is kept elsewhere, so a layer is plain data plus two functions.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from tumord.nn import parallel

SPLIT_PRODUCT = 1 << 24  # multiply-adds from which a dense product is split between threads


class Layer(ABC):
    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}

    @abstractmethod
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray: ...

    @abstractmethod
    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """Fills self.grads; returns the gradient w.r.t. the input (None if not needed)."""

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return input_shape

    def config(self) -> dict:
        """Everything besides arrays needed to rebuild the layer (stored in checkpoints)."""
        return {"type": type(self).__name__.lower()}

    def astype(self, dtype) -> None:
        for store in (self.params, self.buffers):
            for k in store:
                store[k] = store[k].astype(dtype)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}


class Dense(Layer):
    """y = x W + b, He-initialized for the ReLU that usually follows."""

    def __init__(self, in_features: int, units: int, rng: np.random.Generator | None = None):
        super().__init__()
        rng = rng or np.random.default_rng(0)
        scale = np.sqrt(2.0 / in_features)
        self.params["W"] = (rng.standard_normal((in_features, units), dtype=np.float32) * scale).astype(np.float32)
        self.params["b"] = np.zeros(units, np.float32)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.units = units
        self._x: np.ndarray | None = None

    def _parts(self, batch: int) -> int:
        """Large products (the 300x300 MLP's input layer) split their inner dimension between
        threads (nn/parallel.py); small ones are not worth a hand-over."""
        features = self.params["W"].shape[0]
        return parallel.split_parts(features) if batch * features * self.units >= SPLIT_PRODUCT else 1

    def forward(self, x, training=False):
        if training:
            self._x = x
        w, b = self.params["W"], self.params["b"]
        parts = self._parts(x.shape[0])
        if parts == 1:
            return x @ w + b
        partial: list = [None] * parts  # x W = the sum over slices of the inner dimension

        def part(i, ks):
            partial[i] = x[:, ks] @ w[ks]

        parallel.over_slices(part, w.shape[0], parts)
        out = partial[0]
        for p in partial[1:]:
            out += p
        out += b
        return out

    def backward(self, grad_out, need_input_grad=True):
        x, self._x = self._x, None
        w, gw = self.params["W"], self.grads["W"]
        self.grads["b"][...] = grad_out.sum(axis=0)
        dx = np.empty((x.shape[0], w.shape[0]), np.result_type(grad_out, w)) if need_input_grad else None

        def part(_, ks):  # rows ks of the weight gradient, columns ks of the input gradient
            np.matmul(x[:, ks].T, grad_out, out=gw[ks])
            if dx is not None:
                np.matmul(grad_out, w[ks].T, out=dx[:, ks])

        parallel.over_slices(part, w.shape[0], self._parts(x.shape[0]))
        return dx

    def output_shape(self, input_shape):
        return (self.units,)

    def config(self):
        return {"type": "dense", "units": self.units}


class ReLU(Layer):
    def forward(self, x, training=False):
        if training:
            self._mask = x > 0
        return np.maximum(x, 0)

    def backward(self, grad_out, need_input_grad=True):
        g = grad_out * self._mask
        self._mask = None
        return g


class Dropout(Layer):
    """Inverted dropout: scales kept units by 1/(1-rate) in training, identity at inference."""

    def __init__(self, rate: float, rng: np.random.Generator | None = None):
        super().__init__()
        if not 0 <= rate < 1:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = rate
        self.rng = rng or np.random.default_rng(0)

    def forward(self, x, training=False):
        if not training or self.rate == 0:
            self._scale = None
            return x
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.rate
        self._scale = keep.astype(x.dtype) / (1 - self.rate)
        return x * self._scale

    def backward(self, grad_out, need_input_grad=True):
        return grad_out if self._scale is None else grad_out * self._scale

    def config(self):
        return {"type": "dropout", "rate": self.rate}


class Flatten(Layer):
    def forward(self, x, training=False):
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_out, need_input_grad=True):
        return grad_out.reshape(self._shape)

    def output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)


class BatchNorm(Layer):
    """Batch normalization over the batch (and spatial axes for N,C,H,W input).

    Training uses the batch's statistics and updates running averages; inference uses the
    running averages, so an image's prediction does not depend on the rest of its batch.
    """

    def __init__(self, features: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.features, self.momentum, self.eps = features, momentum, eps
        self.params = {"gamma": np.ones(features, np.float32), "beta": np.zeros(features, np.float32)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.buffers = {"running_mean": np.zeros(features, np.float32), "running_var": np.ones(features, np.float32)}

    @staticmethod
    def _rows(x: np.ndarray) -> np.ndarray:
        """x as (features, values): a free view for (N, F) and for channel-major (N, C, H, W) input
        (what the convolutions produce), so every statistic is a reduction along contiguous rows."""
        return x.T if x.ndim == 2 else x.transpose(1, 0, 2, 3).reshape(x.shape[1], -1)

    @staticmethod
    def _unrows(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        if len(shape) == 2:
            return rows.T
        n, c, h, w = shape
        return rows.reshape(c, n, h, w).transpose(1, 0, 2, 3)  # channel-major, as it came

    def forward(self, x, training=False):
        if not training:
            scale, shift = self.inference_affine()
            shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
            return x * scale.reshape(shape) + shift.reshape(shape)
        rows = self._rows(x)
        n = rows.shape[1]
        mean = rows.mean(axis=1)
        x_hat = rows - mean[:, None]
        var = np.vecdot(x_hat, x_hat) / n  # one fused pass (x.var would take three and a temporary)
        inv_std = 1.0 / np.sqrt(var + self.eps)
        x_hat *= inv_std[:, None]
        m = self.momentum
        rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
        rm[...] = (1 - m) * rm + m * mean
        rv[...] = (1 - m) * rv + m * var * (n / max(n - 1, 1))  # unbiased, as PyTorch
        self._cache = (x_hat, inv_std, x.shape)
        out = x_hat * self.params["gamma"][:, None]
        out += self.params["beta"][:, None]
        return self._unrows(out, x.shape)

    def inference_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, shift) per feature: at inference batch norm is y = x * scale + shift."""
        scale = self.params["gamma"] / np.sqrt(self.buffers["running_var"] + self.eps)
        return scale, self.params["beta"] - self.buffers["running_mean"] * scale

    def backward(self, grad_out, need_input_grad=True):
        x_hat, inv_std, shape = self._cache
        self._cache = None
        g = self._rows(grad_out)
        n = g.shape[1]
        g_sum, gx_sum = g.sum(axis=1), np.vecdot(g, x_hat)
        self.grads["gamma"][...] = gx_sum
        self.grads["beta"][...] = g_sum
        if not need_input_grad:
            return None
        # dx = gamma/std * (g - mean(g) - x_hat * mean(g * x_hat)), the batch-statistics terms;
        # x_hat is not needed again, so it holds the correction terms
        scale = self.params["gamma"] * inv_std
        x_hat *= (scale * gx_sum / n)[:, None]
        x_hat += (scale * g_sum / n)[:, None]
        dx = g * scale[:, None]
        dx -= x_hat
        return self._unrows(dx, shape)

    def config(self):
        return {"type": "batchnorm", "momentum": self.momentum, "eps": self.eps}
