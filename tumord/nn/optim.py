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


class SGD(Optimizer):
    """SGD with (optionally Nesterov) momentum and L2 weight decay."""

    def __init__(self, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, nesterov: bool = False):
        super().__init__(lr, weight_decay)
        self.momentum, self.nesterov = momentum, nesterov

    def update(self, name, param, grad):
        if self._decays(name):
            grad = grad + self.weight_decay * param
        v = self.state.setdefault(name, {"velocity": np.zeros_like(param)})["velocity"]
        v *= self.momentum
        v -= self.lr * grad
        if self.nesterov:
            param += self.momentum * v - self.lr * grad
        else:
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
        m *= self.b1
        m += (1 - self.b1) * grad
        v *= self.b2
        v += (1 - self.b2) * np.square(grad)
        step = self.lr * np.sqrt(1 - self.b2**self.t) / (1 - self.b1**self.t)
        if self._decays(name):
            param *= 1 - self.lr * self.weight_decay
        param -= step * m / (np.sqrt(v) + self.eps)


def make_optimizer(name: str, **kwargs) -> Optimizer:
    kinds = {"sgd": SGD, "adamw": AdamW}
    if name not in kinds:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(kinds)}")
    return kinds[name](**kwargs)
