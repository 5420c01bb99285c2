"""The fused inference path computes what the layers compute one by one."""
import numpy as np
import pytest

from tumord.nn.conv import cnn_spec
from tumord.nn.layers import BatchNorm
from tumord.nn.network import Network


def _layer_by_layer(net, x):
    for layer in net.layers:
        x = layer.forward(x, training=False)
    return x


@pytest.mark.parametrize("bias", [False, True])
def test_folded_batch_norm_and_pooled_relu_give_the_layers_result(bias):
    rng = np.random.default_rng(0)
    spec = cnn_spec(channels=(4, 6), classes=3)
    for s in spec:
        if s["type"] == "conv2d":
            s["bias"] = bias
    net = Network((1, 16, 16), spec, rng)
    for layer in net.layers:  # statistics and affine parameters far from the identity
        if isinstance(layer, BatchNorm):
            f = layer.features
            layer.buffers["running_mean"][...] = rng.normal(0, 2, f)
            layer.buffers["running_var"][...] = rng.uniform(0.1, 5, f)
            layer.params["gamma"][...] = rng.normal(0, 2, f)  # negative scales flip the max-pool order
            layer.params["beta"][...] = rng.normal(0, 1, f)
        elif "b" in layer.params:
            layer.params["b"][...] = rng.normal(0, 1, layer.params["b"].shape)
    x = rng.random((5, 1, 16, 16), dtype=np.float32)
    x_before = x.copy()
    fused = net.forward(x)
    np.testing.assert_allclose(fused, _layer_by_layer(net, x), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(x, x_before)  # the caller's input is not written to
    assert np.ptp(fused) > 0.1
