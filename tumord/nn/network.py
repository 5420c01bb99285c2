"""A sequential network built from a plain architecture description.

The description (a list of layer dicts) is what checkpoints store, so a model file is rebuilt
from data alone. Parameter and buffer names are "<layer index>.<name>", e.g. "1.W".
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tumord.nn import conv
from tumord.nn import layers as L
from tumord.nn.block import training_units
from tumord.nn.inference import infer


def _registry() -> dict:
    kinds = {
        "dense": lambda spec, shape, rng: L.Dense(int(np.prod(shape)), spec["units"], rng),
        "batchnorm": lambda spec, shape, rng: L.BatchNorm(shape[0], spec.get("momentum", 0.1), spec.get("eps", 1e-5)),
        "relu": lambda spec, shape, rng: L.ReLU(),
        "dropout": lambda spec, shape, rng: L.Dropout(spec["rate"], rng),
        "flatten": lambda spec, shape, rng: L.Flatten(),
    }
    kinds.update(conv.LAYER_BUILDERS)
    return kinds


class Network:
    def __init__(self, input_shape: tuple[int, ...], spec: list[dict], rng: np.random.Generator | None = None):
        rng = rng or np.random.default_rng(0)
        kinds = _registry()
        self.input_shape = tuple(input_shape)
        self.spec = [dict(s) for s in spec]
        self.layers: list[L.Layer] = []
        shape = self.input_shape
        for i, s in enumerate(self.spec):
            if s.get("type") not in kinds:
                raise ValueError(f"layer {i}: unknown type {s.get('type')!r}; expected one of {sorted(kinds)}")
            layer = kinds[s["type"]](s, shape, rng)
            self.layers.append(layer)
            shape = layer.output_shape(shape)
        self.output_shape = shape
        self._units = training_units(self.layers)  # training runs conv blocks fused (nn/block.py)

    # --- computation -------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if not training:
            return infer(self.layers, x)
        for unit in self._units:
            x = unit.forward(x, training)
        return x

    def backward(self, grad: np.ndarray) -> None:
        """Backpropagates from the logits, stopping at the first layer with parameters.

        Nothing before that layer learns, so its input gradient would be wasted work: for the
        300x300 network it is a 64x512x90000 matrix product, a quarter of a training step.
        """
        first = next((i for i, unit in enumerate(self._units) if unit.params), 0)
        for i in range(len(self._units) - 1, first - 1, -1):
            grad = self._units[i].backward(grad, need_input_grad=i > first)

    def backward_to_input(self, grad: np.ndarray) -> np.ndarray:
        """Backpropagates to the input (for gradient checks and saliency maps)."""
        for unit in reversed(self._units):
            grad = unit.backward(grad, need_input_grad=True)
        return grad.copy()  # not a layer's reused buffer

    # --- parameters and state ------------------------------------------------------------
    def named_parameters(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        for i, layer in enumerate(self.layers):
            for k, p in layer.params.items():
                yield f"{i}.{k}", p, layer.grads[k]

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {}
        for i, layer in enumerate(self.layers):
            for store in (layer.params, layer.buffers):
                for k, v in store.items():
                    state[f"{i}.{k}"] = v
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        own = self.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"weights do not fit the architecture: missing {missing}, unexpected {unexpected}")
        for name, target in own.items():
            value = state[name]
            if value.shape != target.shape:
                raise ValueError(f"weight {name}: shape {value.shape}, architecture expects {target.shape}")
            target[...] = value

    def copy_state(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.state_dict().items()}

    def astype(self, dtype) -> "Network":
        for layer in self.layers:
            layer.astype(dtype)
        return self


def mlp_spec(hidden: int = 512, classes: int = 2, dropout: float = 0.2, batchnorm: bool = True) -> list[dict]:
    """The original design: Dense(hidden) + BN + ReLU + dropout, Dense(classes)."""
    spec = [{"type": "flatten"}, {"type": "dense", "units": hidden}]
    if batchnorm:
        spec.append({"type": "batchnorm"})
    spec += [{"type": "relu"}, {"type": "dropout", "rate": dropout}, {"type": "dense", "units": classes}]
    return spec
