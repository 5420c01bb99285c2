"""The fused training block (conv, batch norm, max pool, ReLU) against the layers one by one."""
import numpy as np
import pytest

from tests.gradcheck import assert_close, numeric_grad
from tumord.nn import conv as C
from tumord.nn import parallel
from tumord.nn.block import ConvBlock, training_units
from tumord.nn.layers import BatchNorm, ReLU


def _layers(c_in, c_out, kernel, pool, bias, rng):
    conv = C.Conv2D(c_in, c_out, kernel, "same", bias, rng)
    bn = BatchNorm(c_out, momentum=0.3)
    bn.params["gamma"][...] = rng.uniform(0.5, 1.5, c_out) * np.resize([1, -1, 1], c_out)  # some negative
    bn.params["beta"][...] = rng.normal(0, 0.5, c_out)
    if bias:
        conv.params["b"][...] = rng.normal(0, 1, c_out)
    layers = [conv, bn, C.MaxPool2D(pool), ReLU()]
    for layer in layers:
        layer.astype(np.float64)
    return layers


CASES = [  # (c_in, c_out, kernel, pool size, bias, input shape): odd sizes leave a dropped pool edge
    (2, 3, 3, 2, False, (3, 2, 6, 7)),
    (3, 4, 3, 3, True, (2, 3, 7, 6)),
    (1, 5, 2, 2, False, (2, 1, 5, 5)),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", CASES)
def test_block_equals_the_four_layers_one_by_one(case, threads, monkeypatch):
    """Outputs, every gradient, the input gradient and the running statistics agree in float64,
    with negative batch-norm scales (their max pool picks the smallest convolution output)."""
    monkeypatch.setattr(parallel, "PIECE_BYTES", 64)  # many pieces, also for these small arrays
    monkeypatch.setattr(parallel, "THREADS", threads)
    c_in, c_out, kernel, pool, bias, shape = case
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape)
    plain, fused = _layers(c_in, c_out, kernel, pool, bias, np.random.default_rng(1)), \
        _layers(c_in, c_out, kernel, pool, bias, np.random.default_rng(1))
    block = ConvBlock(*fused)
    y = x
    for layer in plain:
        y = layer.forward(y, training=True)
    y_fused = block.forward(x, training=True)
    np.testing.assert_allclose(y_fused, y, rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(y.shape)
    dx = g
    for layer in reversed(plain):
        dx = layer.backward(dx)
    dx_fused = block.backward(g)
    np.testing.assert_allclose(dx_fused, dx, rtol=1e-10, atol=1e-12)
    for a, b in zip(plain, fused):
        for k in a.params:
            np.testing.assert_allclose(b.grads[k], a.grads[k], rtol=1e-10, atol=1e-12, err_msg=k)
        for k in a.buffers:
            np.testing.assert_allclose(b.buffers[k], a.buffers[k], rtol=1e-12, err_msg=k)


def test_block_gradients_match_central_differences():
    """d(sum(w * block(x))) / d(input, kernel, bias, gamma, beta), float64, negative scales included."""
    rng = np.random.default_rng(3)
    layers = _layers(2, 3, 3, 2, True, np.random.default_rng(2))
    block = ConvBlock(*layers)
    x = rng.standard_normal((2, 2, 6, 5))
    w = rng.standard_normal(block.forward(x).shape)

    def f():
        return float((block.forward(x) * w).sum())

    block.forward(x)
    dx = block.backward(w.copy()).copy()
    analytic = {(i, k): layer.grads[k].copy() for i, layer in enumerate(layers) for k in layer.params}
    assert_close(dx, numeric_grad(f, x), "block input")
    for (i, k), grad in analytic.items():
        assert_close(grad, numeric_grad(f, layers[i].params[k]), f"block layer {i} {k}")


def test_only_conv_batchnorm_maxpool_relu_runs_fuse():
    rng = np.random.default_rng(0)
    layers = _layers(1, 2, 3, 2, False, rng)
    assert isinstance(training_units(layers)[0], ConvBlock)
    other_order = [layers[0], layers[1], layers[3], layers[2]]  # ReLU before pooling: not fused
    assert not any(isinstance(u, ConvBlock) for u in training_units(other_order))
