"""Central-difference gradient checks in float64, shared by every layer's tests."""
from __future__ import annotations

import numpy as np

from tumord.nn.layers import Dropout, Layer


def _reseed_dropout(layers) -> None:
    # the same dropout mask on every forward pass, so the function being differentiated is fixed
    for layer in layers:
        if isinstance(layer, Dropout):
            layer.rng = np.random.default_rng(1234)


def numeric_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        fp = f()
        x[i] = old - eps
        fm = f()
        x[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


def assert_close(analytic: np.ndarray, numeric: np.ndarray, what: str, tol: float = 1e-6) -> None:
    # relative to the gradient's size, with a floor so that true zeros (a bias before batch
    # norm) compare on an absolute scale instead of amplifying rounding noise
    scale = max(np.abs(analytic).max(), np.abs(numeric).max(), 1e-2)
    err = np.abs(analytic - numeric).max() / scale
    assert err < tol, f"{what}: relative gradient error {err:.2e} exceeds {tol:.0e}"


def check_layer(layer: Layer, x: np.ndarray, seed: int = 0, tol: float = 1e-6) -> None:
    """Checks d(sum(w * layer(x)))/d(input) and /d(each parameter) against central differences."""
    layer.astype(np.float64)
    x = x.astype(np.float64)
    rng = np.random.default_rng(seed + 1000)  # weights unrelated to the input
    y = (_reseed_dropout([layer]), layer.forward(x, training=True))[1]
    w = rng.standard_normal(y.shape)

    def f():
        _reseed_dropout([layer])
        return float((layer.forward(x, training=True) * w).sum())

    _reseed_dropout([layer])
    layer.forward(x, training=True)
    grad_in = layer.backward(w.copy(), need_input_grad=True)
    analytic_params = {k: v.copy() for k, v in layer.grads.items()}
    assert_close(grad_in, numeric_grad(f, x), f"{type(layer).__name__} input", tol)
    for k, p in layer.params.items():
        assert_close(analytic_params[k], numeric_grad(f, p), f"{type(layer).__name__} {k}", tol)


def check_network(net, loss_fn, x: np.ndarray, labels: np.ndarray, tol: float = 1e-6) -> None:
    """Checks the whole network + loss, w.r.t. the input and every parameter."""
    net.astype(np.float64)
    x = x.astype(np.float64)

    def f():
        _reseed_dropout(net.layers)
        return loss_fn(net.forward(x, training=True), labels)[0]

    _reseed_dropout(net.layers)
    _, g = loss_fn(net.forward(x, training=True), labels)
    grad_in = net.backward_to_input(g)
    analytic = {name: grad.copy() for name, _, grad in net.named_parameters()}
    assert_close(grad_in, numeric_grad(f, x), "network input", tol)
    for name, p, _ in net.named_parameters():
        assert_close(analytic[name], numeric_grad(f, p), f"network {name}", tol)
