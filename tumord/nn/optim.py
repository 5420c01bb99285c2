"""Optimizers. Their state lives here, keyed like the network's parameters, not in the layers."""
from __future__ import annotations

import numpy as np

from tumord.nn import parallel


class Optimizer:
    BLOCK = 1 << 18

    def __init__(self, lr: float, weight_decay: float = 0.0):
        self.lr = lr
        self.weight_decay = weight_decay
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self._scratch: list[np.ndarray] = []

    def _decays(self, name: str) -> bool:
        # biases and batch-norm affine parameters are not decayed (the usual practice)
        return self.weight_decay > 0 and name.rsplit(".", 1)[-1] in ("W", "kernel")

    def _state(self, name: str, param: np.ndarray, *keys: str) -> dict[str, np.ndarray]:
        # not dict.setdefault: that would build (and zero, a pass over memory) new arrays every step
        if name not in self.state:
            self.state[name] = {k: np.zeros_like(param) for k in keys}
        return self.state[name]

    def step(self, named_params) -> None:
        for name, param, grad in named_params:
            self.update(name, param, grad)

    def _blockwise(self, update, *arrays: np.ndarray) -> None:
        """Runs update(scratch, *blocks) over matching flat blocks of the arrays, in place.

        Blocks of 256k values stay in cache between the update's operations, where whole-array
        temporaries would cost a pass over memory each (the 300x300 input layer has 46M weights,
        184 MB). Large arrays are split between threads: numpy releases the GIL in its loops, and a
        memory-bound update gains from a second core while BLAS is idle.
        """
        if not all(a.flags.c_contiguous for a in arrays):
            raise ValueError("optimizer arrays must be C-contiguous (a reshape would copy and lose updates)")
        flat = [a.reshape(-1) for a in arrays]
        n, dtype = flat[0].size, flat[0].dtype
        parts = min(parallel.THREADS, n // (4 * self.BLOCK)) or 1
        if len(self._scratch) < parts or self._scratch[0].dtype != dtype:
            self._scratch = [np.empty(self.BLOCK, dtype) for _ in range(parts)]
        bounds = [n * k // parts // self.BLOCK * self.BLOCK for k in range(parts)] + [n]

        def run(part: int) -> None:
            scratch = self._scratch[part]
            for i in range(bounds[part], bounds[part + 1], self.BLOCK):
                j = min(i + self.BLOCK, bounds[part + 1])
                update(scratch[: j - i], *(f[i:j] for f in flat))

        parallel.run(run, parts)


class SGD(Optimizer):
    """SGD with momentum and L2 weight decay: v = mu v - lr (g + wd w); w += v."""

    def __init__(self, lr: float, momentum: float = 0.9, weight_decay: float = 0.0):
        super().__init__(lr, weight_decay)
        self.momentum = momentum

    def update(self, name, param, grad):
        v = self._state(name, param, "velocity")["velocity"]
        lr, momentum = self.lr, self.momentum
        decay = self.weight_decay if self._decays(name) else 0.0

        def update(tmp, p, g, vel):
            vel *= momentum
            np.multiply(g, lr, out=tmp)
            vel -= tmp
            if decay:
                np.multiply(p, lr * decay, out=tmp)
                vel -= tmp
            p += vel

        self._blockwise(update, param, grad, v)


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
        s = self._state(name, param, "m", "v")
        step = self.lr * np.sqrt(1 - self.b2**self.t) / (1 - self.b1**self.t)
        shrink = 1 - self.lr * self.weight_decay if self._decays(name) else 1.0

        def update(tmp, p, g, m, v):
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

        self._blockwise(update, param, grad, s["m"], s["v"])


def make_optimizer(name: str, **kwargs) -> Optimizer:
    kinds = {"sgd": SGD, "adamw": AdamW}
    if name not in kinds:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(kinds)}")
    return kinds[name](**kwargs)
