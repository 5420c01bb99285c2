"""Gradient, consistency and stability checks for the fully connected layers and the loss."""
import numpy as np
import pytest

from tests.gradcheck import check_layer, check_network
from tumord.nn import layers as L
from tumord.nn.losses import softmax, softmax_cross_entropy
from tumord.nn.network import Network, mlp_spec


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: L.Dense(7, 5, np.random.default_rng(1)), (4, 7)),
        (lambda: L.ReLU(), (4, 7)),
        (lambda: L.Dropout(0.3), (6, 5)),
        (lambda: L.BatchNorm(5), (6, 5)),
        (lambda: L.BatchNorm(3), (4, 3, 2, 2)),
        (lambda: L.Flatten(), (2, 3, 2, 2)),
    ],
)
def test_layer_gradients_match_central_differences(make, shape):
    """Every layer's backward pass equals the float64 numerical gradient."""
    x = np.random.default_rng(0).standard_normal(shape) + 0.1  # keep ReLU inputs away from 0
    check_layer(make(), x)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_gradient_matches_central_differences(smoothing):
    """Softmax cross-entropy's gradient matches numerical differences, with and without smoothing."""
    from tests.gradcheck import assert_close, numeric_grad

    logits = np.random.default_rng(0).standard_normal((5, 3))
    labels = np.array([0, 2, 1, 1, 0])
    _, g = softmax_cross_entropy(logits, labels, smoothing)
    assert_close(g, numeric_grad(lambda: softmax_cross_entropy(logits, labels, smoothing)[0], logits), "loss")


def test_whole_network_gradient_matches_central_differences():
    """The original design (dense, batch norm, ReLU, dropout, dense) backpropagates exactly."""
    rng = np.random.default_rng(3)
    net = Network((2, 3, 3), mlp_spec(hidden=6, classes=3, dropout=0.25), rng)
    x = rng.standard_normal((5, 2, 3, 3))
    check_network(net, softmax_cross_entropy, x, np.array([0, 1, 2, 1, 0]))


def _trained_net():
    rng = np.random.default_rng(0)
    net = Network((16,), mlp_spec(hidden=8, classes=2), rng)
    for _ in range(5):  # update the running statistics away from their initial values
        net.forward(rng.standard_normal((32, 16)).astype(np.float32) * 3 + 1, training=True)
    return net, rng


def test_batch_prediction_equals_single_image_predictions():
    """Inference uses running statistics: an image's probabilities do not depend on its batch."""
    net, rng = _trained_net()
    x = rng.standard_normal((10, 16)).astype(np.float32)
    batch = softmax(net.forward(x))
    single = np.concatenate([softmax(net.forward(x[i : i + 1])) for i in range(10)])
    np.testing.assert_allclose(batch, single, rtol=1e-5, atol=1e-6)


def test_different_images_give_different_probabilities():
    """The original defect: a single image normalized to zeros, so every prediction was equal."""
    net, rng = _trained_net()
    a, b = (softmax(net.forward(rng.standard_normal((1, 16)).astype(np.float32))) for _ in range(2))
    assert not np.allclose(a, b)


def test_softmax_and_loss_are_stable_on_huge_logits():
    """Logits of +-1e4 give finite probabilities, loss and gradient (log-sum-exp)."""
    logits = np.array([[1e4, -1e4], [-1e4, 1e4], [1e4, 1e4]], np.float32)
    p = softmax(logits)
    loss, g = softmax_cross_entropy(logits, np.array([1, 1, 0]))
    assert np.isfinite(p).all() and np.isfinite(loss) and np.isfinite(g).all()
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-6)
    assert loss == pytest.approx(2e4 / 3 + np.log(2) / 3, rel=1e-4)


def test_state_dict_round_trip_rejects_wrong_shapes():
    """Weights load only into the architecture they were made for."""
    net, _ = _trained_net()
    other = Network((16,), mlp_spec(hidden=8, classes=2), np.random.default_rng(9))
    other.load_state_dict(net.state_dict())
    x = np.ones((2, 16), np.float32)
    np.testing.assert_array_equal(net.forward(x), other.forward(x))
    with pytest.raises(ValueError, match="shape"):
        Network((16,), mlp_spec(hidden=9, classes=2)).load_state_dict(net.state_dict())


def test_adamw_and_sgd_steps_match_the_formulas_worked_by_hand():
    """One optimizer step equals the textbook update, decay on weights only."""
    from tumord.nn.optim import SGD, AdamW

    w, b = np.array([1.0, -2.0], np.float32), np.array([0.5], np.float32)
    gw, gb = np.array([0.1, 0.2], np.float32), np.array([-0.3], np.float32)
    opt = AdamW(lr=0.1, weight_decay=0.5)
    for _ in range(2):
        opt.step([("0.W", w, gw), ("0.b", b, gb)])
    # two identical gradients: m_hat = g, v_hat = g^2, so each step moves lr * g/|g| (+ decay on W)
    w_ref = np.array([1.0, -2.0])
    for _ in range(2):
        w_ref = w_ref * (1 - 0.1 * 0.5) - 0.1 * np.sign([0.1, 0.2])
    np.testing.assert_allclose(w, w_ref, rtol=1e-5)
    np.testing.assert_allclose(b, [0.5 + 0.2], rtol=1e-5)
    p, g = np.array([1.0], np.float32), np.array([1.0], np.float32)
    sgd = SGD(lr=0.1, momentum=0.9)
    sgd.step([("0.b", p, g)])
    sgd.step([("0.b", p, g)])
    np.testing.assert_allclose(p, [1 - 0.1 - (0.9 * 0.1 + 0.1)], rtol=1e-6)


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_block_wise_updates_equal_whole_array_updates(kind, monkeypatch):
    """Updating in blocks (to avoid temporaries), split between threads or not, equals one whole-array pass."""
    from tumord.nn import optim, parallel

    results = []
    for block, threads in ((3, 1), (3, 3), (1 << 18, 1)):
        monkeypatch.setattr(parallel, "THREADS", threads)
        p = np.arange(100, dtype=np.float32).reshape(4, 25) / 7
        opt = optim.make_optimizer(kind, lr=0.1, weight_decay=0.01)
        opt.BLOCK = block
        for step, g in enumerate(np.random.default_rng(1).standard_normal((3, 4, 25)).astype(np.float32)):
            opt.step([("0.W", p, g)])
            state = state if step else list(opt.state["0.W"].values())
        assert all(a is b for a, b in zip(state, opt.state["0.W"].values()))  # allocated once, not per step
        assert len(opt._scratch) == threads  # the split happened (3 threads: 100 values > 4 blocks each)
        results.append(p)
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6)
    np.testing.assert_allclose(results[0], results[2], rtol=1e-6)


def test_backward_stops_at_the_first_layer_that_learns():
    """The input layer's own input gradient (a batch x 512 x 90,000 product at 300x300) is never formed."""
    rng = np.random.default_rng(0)
    net = Network((1, 4, 4), mlp_spec(hidden=8, classes=2, dropout=0.0), rng)
    calls = []
    for i, layer in enumerate(net.layers):
        def spy(g, need_input_grad=True, i=i, original=layer.backward):
            calls.append((i, need_input_grad))
            return original(g, need_input_grad)
        layer.backward = spy
    x, labels = rng.standard_normal((3, 1, 4, 4)).astype(np.float32), np.array([0, 1, 1])
    _, g = softmax_cross_entropy(net.forward(x, training=True), labels)
    net.backward(g)
    assert calls[-1] == (1, False) and min(i for i, _ in calls) == 1  # Dense at 1, after Flatten at 0
    grads = {name: grad.copy() for name, _, grad in net.named_parameters()}
    net.forward(x, training=True)
    net.backward_to_input(g)
    for name, _, grad in net.named_parameters():
        np.testing.assert_array_equal(grads[name], grad)
