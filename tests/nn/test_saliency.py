"""Input-gradient saliency equals the numerical derivative of the inference-mode class score."""
import numpy as np

from tests.gradcheck import assert_close, numeric_grad
from tumord.nn.network import Network, mlp_spec
from tumord.nn.saliency import input_gradient


def _check(net, x):
    net.astype(np.float64)
    rng = np.random.default_rng(5)
    for _ in range(3):  # move the running statistics away from 0 / 1
        net.forward(rng.standard_normal(x.shape) * 2 + 0.5, training=True)
    target = np.array([1, 0])
    analytic = input_gradient(net, x.copy(), target)
    numeric = numeric_grad(lambda: float(net.forward(x)[np.arange(2), target].sum()), x)
    assert_close(analytic, numeric, "saliency")


def test_mlp_saliency_matches_numerical_derivative():
    """Batch norm uses running statistics and dropout is off, as at inference."""
    rng = np.random.default_rng(0)
    net = Network((1, 4, 4), mlp_spec(hidden=7, classes=2, dropout=0.5), rng)
    _check(net, rng.standard_normal((2, 1, 4, 4)))


def test_cnn_saliency_matches_numerical_derivative():
    """The same holds through convolution, pooling and global average pooling."""
    from tumord.nn.conv import cnn_spec

    rng = np.random.default_rng(1)
    net = Network((1, 8, 8), cnn_spec((3, 4), classes=2, dropout=0.3), rng)
    _check(net, rng.standard_normal((2, 1, 8, 8)))
