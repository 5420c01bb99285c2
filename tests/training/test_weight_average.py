"""The moving average of the weights: its arithmetic, the swap, and its use in training."""
import numpy as np
import pytest

from tests.training.test_trainer import ADAMW, _cfg, _data, _fit
from tumord.nn.losses import softmax_cross_entropy
from tumord.nn.network import Network
from tumord.training.trainer import predict_logits
from tumord.training.weight_average import WeightAverage


def _net():
    net = Network((1, 2, 2), [{"type": "flatten"}, {"type": "dense", "units": 3}])
    for _, p, _ in net.named_parameters():
        p[...] = 0
    return net


def test_the_average_moves_towards_the_weights_by_the_ramped_decay():
    """From weights 0 to weights 1: after n updates the average is 1 - prod(decay_i), with
    decay_i = min(decay, (1 + i) / (10 + i)), so early steps are followed closely."""
    net = _net()
    average = WeightAverage(net, 0.25)
    for _, p, _ in net.named_parameters():
        p[...] = 1
    decays = []
    for i in range(1, 5):
        average.update(net)
        decays.append(min(0.25, (1 + i) / (10 + i)))
        np.testing.assert_allclose(average.state["1.W"], 1 - np.prod(decays), rtol=1e-6)
    assert decays[-1] == 0.25  # the ramp has reached the configured decay


def test_swapped_in_holds_the_average_inside_and_the_own_weights_after_even_on_error():
    net = _net()
    average = WeightAverage(net, 0.5)  # the average: zeros
    for _, p, _ in net.named_parameters():
        p[...] = 2
    with pytest.raises(RuntimeError), average.swapped_in(net):
        assert all((p == 0).all() for _, p, _ in net.named_parameters())
        raise RuntimeError("inside")
    assert all((p == 2).all() for _, p, _ in net.named_parameters())


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_a_decay_outside_zero_to_one_is_refused(decay):
    with pytest.raises(ValueError, match="between 0 and 1"):
        WeightAverage(_net(), decay)


def test_training_judges_and_keeps_the_averaged_weights():
    """With an average, the epochs judged on validation are the average's, and the network kept
    is the average at its best epoch: not the weights a run without it reaches, and still good."""
    images, labels = _data(n=160)
    va = np.arange(120, 160)
    runs = {}
    for decay in (0.0, 0.95):
        net, hist = _fit(images, labels, 120, _cfg(**ADAMW, precise_bn_batches=0, weight_average=decay))
        logits = predict_logits(net, images, va)
        loss, _ = softmax_cross_entropy(logits, labels[va])
        assert loss == pytest.approx(hist.epochs[hist.best_epoch - 1]["val_loss"], rel=1e-5)
        assert (logits.argmax(1) == labels[va]).mean() >= 0.85
        runs[decay] = [row["val_loss"] for row in hist.epochs]
    # the same seed and batches: only the weights judged differ
    assert not np.allclose(runs[0.0], runs[0.95], rtol=1e-3)
