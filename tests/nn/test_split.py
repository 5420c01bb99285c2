"""Products split between threads (tumord/nn/parallel.py): each thread its own slice of images
(convolutions) or of the inner dimension (large dense layers), one BLAS thread each.

The split computes the same function and gradients as the unsplit engine (float64, up to the
order of a sum), and its gradients equal central differences. The split is forced here with
three threads over odd batches, so slices have unequal sizes, whatever the machine's cores.
"""
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from tests.gradcheck import check_layer, check_network
from tumord.nn import conv as C
from tumord.nn import layers as L
from tumord.nn import parallel
from tumord.nn.losses import softmax_cross_entropy
from tumord.nn.network import Network


@pytest.fixture
def split(monkeypatch):
    """Three threads for the split; the yielded function turns it on or off."""
    monkeypatch.setattr(parallel, "THREADS", 3)
    monkeypatch.setattr(L, "SPLIT_PRODUCT", 1)  # the tests' small dense layers split too
    with threadpool_limits(3, user_api="blas"):
        def switch(on: bool) -> None:
            monkeypatch.setattr(parallel, "SPLIT", on)
            assert parallel.split_parts(5) == (3 if on else 1)
        yield switch


def _conv_run(make, x, g):
    layer = make()
    layer.astype(np.float64)
    out = layer.forward(x, training=True).copy()
    dx = layer.backward(g.copy()).copy()
    return out, dx, {k: v.copy() for k, v in layer.grads.items()}, layer.forward(x).copy()


CONVS = [
    (lambda: C.Conv2D(2, 3, 3, "same", True, np.random.default_rng(1)), (5, 2, 6, 5)),
    (lambda: C.Conv2D(2, 3, (2, 3), "valid", True, np.random.default_rng(1)), (4, 2, 5, 4)),
    (lambda: C.Conv2D(1, 2, 5, "same", False, np.random.default_rng(1)), (7, 1, 3, 4)),  # taps off the image
]


@pytest.mark.parametrize("make, shape", CONVS)
def test_split_convolution_equals_the_unsplit_one(make, shape, split):
    """Training output, input and weight gradients, and inference output, in float64."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    g = rng.standard_normal((shape[0], *make().output_shape(shape[1:])))
    split(False)
    plain = _conv_run(make, x, g)
    split(True)
    parted = _conv_run(make, x, g)
    for a, b in zip(plain[:2] + plain[3:], parted[:2] + parted[3:]):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)
    for k in plain[2]:
        np.testing.assert_allclose(parted[2][k], plain[2][k], rtol=1e-12, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("make, shape", CONVS)
def test_split_convolution_gradients_match_central_differences(make, shape, split):
    split(True)
    check_layer(make(), np.random.default_rng(2).standard_normal(shape))


def test_split_dense_layer_equals_the_unsplit_one_and_central_differences(split):
    rng = np.random.default_rng(3)
    x, g = rng.standard_normal((5, 7)), rng.standard_normal((5, 4))
    runs = []
    for on in (False, True):
        split(on)
        layer = L.Dense(7, 4, np.random.default_rng(1))
        layer.astype(np.float64)
        out = layer.forward(x, training=True)
        runs.append((out, layer.backward(g), layer.grads["W"].copy(), layer.grads["b"].copy(), layer.forward(x)))
    for a, b in zip(*runs):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)
    check_layer(L.Dense(7, 4, np.random.default_rng(1)), x)


@pytest.mark.parametrize("spec", [C.cnn_spec(channels=(3, 4), classes=3, dropout=0.25),
                                  [{"type": "flatten"}, {"type": "dense", "units": 5}, {"type": "batchnorm"},
                                   {"type": "relu"}, {"type": "dense", "units": 3}]])
def test_split_network_gradient_matches_central_differences(spec, split):
    """The fused conv blocks and the dense layers, split, end to end (odd batch of 5)."""
    split(True)
    rng = np.random.default_rng(4)
    net = Network((1, 8, 8), spec, rng)
    check_network(net, softmax_cross_entropy, rng.standard_normal((5, 1, 8, 8)), np.array([0, 1, 2, 1, 0]))


def _blas_threads_now() -> int:
    return parallel.blas_threads()


def test_blas_threads_come_back_after_nested_concurrent_and_failing_regions():
    """The count is process-wide: regions overlapping in several threads restore it once, at the
    end of the last; an exception inside restores it too."""
    with threadpool_limits(2, user_api="blas"):
        inside = []
        gate = threading.Barrier(3)

        def region():
            with parallel.one_blas_thread():
                gate.wait(timeout=10)  # all three regions open at once
                with parallel.one_blas_thread():
                    inside.append(_blas_threads_now())
                gate.wait(timeout=10)

        threads = [threading.Thread(target=region) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        assert inside == [1, 1, 1]
        assert _blas_threads_now() == 2
        with pytest.raises(ZeroDivisionError):
            with parallel.one_blas_thread():
                1 / 0
        assert _blas_threads_now() == 2


def test_one_blas_thread_means_no_split(monkeypatch):
    """A caller that set BLAS to one thread (the service predicts chunks in parallel itself)
    keeps its products whole, in its own thread."""
    monkeypatch.setattr(parallel, "THREADS", 2)
    with threadpool_limits(1, user_api="blas"):
        assert parallel.split_parts(64) == 1
        seen = []
        parallel.over_slices(lambda k, s: seen.append((k, s, threading.current_thread())), 64, 1)
        assert seen == [(0, slice(0, 64), threading.current_thread())]


def test_a_split_inside_a_pool_task_runs_in_that_task(monkeypatch):
    """Work on the pool that splits again runs its slices itself instead of waiting for busy workers."""
    monkeypatch.setattr(parallel, "THREADS", 2)
    done = []

    def task(k):
        parallel.run(lambda i: done.append((k, i)), 2)

    parallel.pool().submit(parallel.run, task, 2).result(timeout=20)
    assert sorted(done) == [(0, 0), (0, 1), (1, 0), (1, 1)]


@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_split_network_input_equals_the_unsplit_one(dtype, split):
    """to_input converts and scales in one pass, in image slices when the products split: the same
    float32 values, bit for bit, as a cast followed by the scaling, for any slice sizes."""
    from tumord.model.predict import to_input

    images = np.random.default_rng(3).integers(0, 256, (7, 5, 6)).astype(dtype)
    expected = images.astype(np.float32)
    expected *= 1.0 / 255.0
    for on in (True, False):
        split(on)
        x = to_input(images, (1, 5, 6))
        assert x.dtype == np.float32 and x.shape == (7, 1, 5, 6)
        np.testing.assert_array_equal(x.reshape(images.shape), expected)
