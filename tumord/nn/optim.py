"""Optimizers. Their state lives here, keyed like the network's parameters, not in the layers."""
from __future__ import annotations

import numpy as np


class Optimizer:
    BLOCK = 1 << 16

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

    def _chunks(self, *arrays: np.ndarray):
        """Flat views of the arrays, block by block, with a scratch block to compute in.

        Updates run in place in blocks of 64k values (they stay in cache between the steps): a 300x300 input layer has 46M weights, and
        a temporary array of that size would cost 184 MB and a pass over memory.
        """
        if not all(a.flags.c_contiguous for a in arrays):
            raise ValueError("optimizer arrays must be C-contiguous (a reshape would copy and lose updates)")
        flat = [a.reshape(-1) for a in arrays]
        n = flat[0].size
        if getattr(self, "_buf", None) is None or self._buf.dtype != flat[0].dtype:
            self._buf = np.empty(self.BLOCK, flat[0].dtype)
        for i in range(0, n, self.BLOCK):
            j = min(i + self.BLOCK, n)
            yield (self._buf[: j - i], *(f[i:j] for f in flat))


class SGD(Optimizer):
    """SGD with momentum and L2 weight decay: v = mu v - lr (g + wd w); w += v."""

    def __init__(self, lr: float, momentum: float = 0.9, weight_decay: float = 0.0):
        super().__init__(lr, weight_decay)
        self.momentum = momentum

    def update(self, name, param, grad):
        v = self.state.setdefault(name, {"velocity": np.zeros_like(param)})["velocity"]
        decay = self.weight_decay if self._decays(name) else 0.0
        for tmp, p, g, vel in self._chunks(param, grad, v):
            vel *= self.momentum
            np.multiply(g, self.lr, out=tmp)
            vel -= tmp
            if decay:
                np.multiply(p, self.lr * decay, out=tmp)
                vel -= tmp
            p += vel


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
        step = self.lr * np.sqrt(1 - self.b2**self.t) / (1 - self.b1**self.t)
        shrink = 1 - self.lr * self.weight_decay if self._decays(name) else 1.0
        for tmp, p, g, m, v in self._chunks(param, grad, s["m"], s["v"]):
            m *= self.b1
            np.multiply(g, 1 - self.b1, out=tmp)
            m += tmp
            v *= self.b2
            np.multiply(g, g, out=tmp)
            tmp *= 1 - self.b2
            v += tmp
            if shrink != 1.0:
                p *= shrink
            np.sqrt(v, out=tmp)
            tmp += self.eps
            np.divide(m, tmp, out=tmp)
            tmp *= step
            p -= tmp


def make_optimizer(name: str, **kwargs) -> Optimizer:
    kinds = {"sgd": SGD, "adamw": AdamW}
    if name not in kinds:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(kinds)}")
    return kinds[name](**kwargs)
