"""Gradient, reference and consistency checks for the convolution and pooling layers."""
import numpy as np
import pytest

from tests.gradcheck import check_layer, check_network
from tumord.nn import conv as C
from tumord.nn.losses import softmax, softmax_cross_entropy
from tumord.nn.network import Network


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: C.Conv2D(2, 3, 3, "same", True, np.random.default_rng(1)), (2, 2, 5, 4)),
        (lambda: C.Conv2D(2, 3, (2, 3), "valid", True, np.random.default_rng(1)), (2, 2, 5, 4)),
        (lambda: C.Conv2D(1, 2, 2, "same", False, np.random.default_rng(1)), (3, 1, 4, 5)),
        (lambda: C.Conv2D(2, 2, 5, "same", False, np.random.default_rng(1)), (2, 2, 3, 4)),  # taps off the image
        (lambda: C.MaxPool2D(2), (2, 3, 5, 4)),  # odd height: the last row is dropped
        (lambda: C.MaxPool2D(3), (2, 2, 6, 7)),
        (lambda: C.GlobalAvgPool(), (3, 2, 3, 4)),
    ],
)
def test_layer_gradients_match_central_differences(make, shape):
    """Every new layer's backward pass equals the float64 numerical gradient."""
    x = np.random.default_rng(0).standard_normal(shape)
    check_layer(make(), x)


def test_small_cnn_gradient_matches_central_differences():
    """conv + batch norm + ReLU + max pool blocks, global pooling, dropout, dense: end to end."""
    rng = np.random.default_rng(3)
    net = Network((1, 8, 8), C.cnn_spec(channels=(3, 4), classes=3, dropout=0.25), rng)
    x = rng.standard_normal((4, 1, 8, 8))
    check_network(net, softmax_cross_entropy, x, np.array([0, 1, 2, 1]))


def _direct_conv(x, k, b, pad):
    n, c, h, w = x.shape
    f, _, kh, kw = k.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], kh - 1 - pad[0]), (pad[1], kw - 1 - pad[1])))
    out = np.zeros((n, f, h, w))
    for i in range(n):
        for o in range(f):
            for y in range(h):
                for z in range(w):
                    out[i, o, y, z] = (xp[i, :, y : y + kh, z : z + kw] * k[o]).sum() + b[o]
    return out


@pytest.mark.parametrize("kernel, padding, hw", [(3, "same", (6, 5)), (2, "same", (6, 5)), ((3, 1), "valid", (6, 5)),
                                                 (5, "same", (3, 4)), (3, "same", (1, 2)), ((1, 3), "same", (2, 1))])
def test_conv_matches_direct_convolution(kernel, padding, hw):
    """im2col + matrix product equals the textbook sum over the window (cross-correlation), also
    where the kernel is as large as the image or larger (every tap's flat shift wraps or leaves)."""
    rng = np.random.default_rng(5)
    layer = C.Conv2D(3, 4, kernel, padding, True, rng)
    layer.params["b"][:] = rng.standard_normal(4)
    x = rng.standard_normal((2, 3, *hw)).astype(np.float32)
    k, b = layer.params["kernel"].astype(np.float64), layer.params["b"].astype(np.float64)
    if padding == "same":
        expected = _direct_conv(x.astype(np.float64), k, b, layer.pad)
    else:  # a valid convolution is the top-left part of one padded only at the bottom/right
        expected = _direct_conv(x.astype(np.float64), k, b, (0, 0))[:, :, : hw[0] - k.shape[2] + 1, : hw[1] - k.shape[3] + 1]
    out = layer.forward(x)
    assert out.shape == expected.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_max_pool_sends_a_tied_window_gradient_to_one_element():
    """On flat regions (black MRI background) all window elements tie; the gradient is not duplicated."""
    pool = C.MaxPool2D(2)
    pool.forward(np.ones((1, 1, 4, 4), np.float32), training=True)
    dx = pool.backward(np.ones((1, 1, 2, 2), np.float32))
    np.testing.assert_array_equal(dx[0, 0], np.tile([[1, 0], [0, 0]], (2, 2)))


def _trained_cnn():
    rng = np.random.default_rng(0)
    net = Network((1, 16, 16), C.cnn_spec(channels=(4, 8), classes=2), rng)
    for _ in range(3):  # move the batch-norm running statistics away from their initial values
        net.forward(rng.standard_normal((8, 1, 16, 16)).astype(np.float32) * 2 + 1, training=True)
    return net, rng


def test_batch_prediction_equals_single_image_predictions():
    """In inference mode an image's probabilities do not depend on the rest of its batch."""
    net, rng = _trained_cnn()
    x = rng.standard_normal((6, 1, 16, 16)).astype(np.float32)
    batch = softmax(net.forward(x))
    single = np.concatenate([softmax(net.forward(x[i : i + 1])) for i in range(6)])
    np.testing.assert_allclose(batch, single, rtol=1e-5, atol=1e-6)


def test_inference_between_forward_and_backward_keeps_the_gradients():
    """A validation pass between a training forward and its backward does not touch the kept columns."""
    rng = np.random.default_rng(2)
    layer = C.Conv2D(2, 3, 3, "same", False, rng)
    x, g = rng.standard_normal((2, 2, 6, 6)).astype(np.float32), rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    layer.forward(x, training=True)
    dx = layer.backward(g)
    expected = layer.grads["kernel"].copy(), dx.copy()
    layer.forward(x, training=True)
    layer.forward(rng.standard_normal((2, 2, 6, 6)).astype(np.float32))
    dx = layer.backward(g)
    np.testing.assert_array_equal(layer.grads["kernel"], expected[0])
    np.testing.assert_array_equal(dx, expected[1])


def test_configs_rebuild_the_same_network():
    """Each layer's config() is a spec its builder accepts: the rebuilt network loads the weights."""
    net, rng = _trained_cnn()
    rebuilt = Network(net.input_shape, [layer.config() for layer in net.layers], np.random.default_rng(7))
    rebuilt.load_state_dict(net.state_dict())
    x = rng.standard_normal((3, 1, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(net.forward(x), rebuilt.forward(x))
    assert rebuilt.output_shape == (2,)
    assert net.layers[0].config() == C.cnn_spec(channels=(4, 8))[0]


def test_builders_reject_flat_input():
    with pytest.raises(ValueError, match="conv2d needs"):
        Network((16,), [{"type": "conv2d", "filters": 2}])
