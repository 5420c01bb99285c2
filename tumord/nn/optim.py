"""Optimizers. Their state lives here, keyed like the network's parameters, not in the layers."""
from __future__ import annotations

import numpy as np


class Optimizer:
    def __init__(self, lr: float, weight_decay: float = 0.0):
        self.lr = lr
        self.weight_decay = weight_decay
        self.state: dict[str, dict[str, np.ndarray]] = {}

    def _decays(self, name: str) -> bool:
        # biases and batch-norm affine parameters are not decayed (the usual practice)
        return self.weight_decay > 0 and name.rsplit(".", 1)[-1] in ("W", "kernel")

    def step(self, named_params) -> None:
        for name, param, grad in named_params:
            self.update(name, param, grad)

    def _scratch(self, like: np.ndarray) -> np.ndarray:
        buf = getattr(self, "_buf", None)
        if buf is None or buf.size < like.size or buf.dtype != like.dtype:
            buf = self._buf = np.empty(like.size, like.dtype)
        return buf[: like.size].reshape(like.shape)


class SGD(Optimizer):
    """SGD with momentum and L2 weight decay: v = mu v - lr (g + wd w); w += v."""

    def __init__(self, lr: float, momentum: float = 0.9, weight_decay: float = 0.0):
        super().__init__(lr, weight_decay)
        self.momentum = momentum

    def update(self, name, param, grad):
        v = self.state.setdefault(name, {"velocity": np.zeros_like(param)})["velocity"]
        tmp = self._scratch(param)
        v *= self.momentum
        np.multiply(grad, self.lr, out=tmp)
        v -= tmp
        if self._decays(name):
            np.multiply(param, self.lr * self.weight_decay, out=tmp)
            v -= tmp
        param += v


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter)."""

    def __init__(self, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__(lr, weight_decay)
        self.b1, self.b2 = betas
        self.eps = eps
        self.t = 0

    def step(self, named_params):
        self.t += 1
        super().step(named_params)

    def update(self, name, param, grad):
        s = self.state.setdefault(name, {"m": np.zeros_like(param), "v": np.zeros_like(param)})
        m, v = s["m"], s["v"]
        # in place with one scratch buffer: a 300x300 input layer has 46M weights, and each
        # temporary array would cost 184 MB and a pass over memory
        tmp = self._scratch(param)
        m *= self.b1
        np.multiply(grad, 1 - self.b1, out=tmp)
        m += tmp
        v *= self.b2
        np.multiply(grad, grad, out=tmp)
        tmp *= 1 - self.b2
        v += tmp
        step = self.lr * np.sqrt(1 - self.b2**self.t) / (1 - self.b1**self.t)
        if self._decays(name):
            param *= 1 - self.lr * self.weight_decay
        np.sqrt(v, out=tmp)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= step
        param -= tmp


def make_optimizer(name: str, **kwargs) -> Optimizer:
    kinds = {"sgd": SGD, "adamw": AdamW}
    if name not in kinds:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(kinds)}")
    return kinds[name](**kwargs)
