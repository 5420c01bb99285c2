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


def relu_before_pool(spec):
    """The block order of models saved before cnn_spec pooled first: ..., relu, maxpool."""
    out = [dict(s) for s in spec]
    for i in range(len(out) - 1):
        if out[i]["type"] == "maxpool" and out[i + 1]["type"] == "relu":
            out[i], out[i + 1] = out[i + 1], out[i]
    return out


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("relu_first", [False, True])
def test_folded_batch_norm_and_pooled_relu_give_the_layers_result(bias, relu_first):
    rng = np.random.default_rng(0)
    spec = cnn_spec(channels=(4, 6), classes=3)
    spec = relu_before_pool(spec) if relu_first else spec
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


def test_pooling_before_or_after_relu_trains_identically():
    """cnn_spec pools before the ReLU; the gradients equal those of the older order."""
    from tumord.nn.losses import softmax_cross_entropy

    rng = np.random.default_rng(1)
    spec = cnn_spec(channels=(4, 6), classes=2, dropout=0.0)
    nets = [Network((1, 16, 16), s, np.random.default_rng(0)) for s in (spec, relu_before_pool(spec))]
    x, labels = rng.standard_normal((4, 1, 16, 16)).astype(np.float32), np.array([0, 1, 1, 0])
    grads = []
    for net in nets:
        _, g = softmax_cross_entropy(net.forward(x, training=True), labels)
        net.backward(g)
        grads.append([np.array(grad) for _, _, grad in net.named_parameters()])  # same order in both
    assert len(grads[0]) == len(grads[1]) == 8
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_chunks_predicted_in_parallel_threads_match_one_thread_after_training():
    """Inference keeps no shared buffers: threads predicting chunks at once give the one-thread
    result, even right after a training step whose batch had the chunks' shape (training keeps
    its column buffers for reuse; predictions sharing them would overwrite each other's)."""
    from concurrent.futures import ThreadPoolExecutor

    from tumord.model.predict import predict_logits

    rng = np.random.default_rng(0)
    net = Network((1, 48, 48), cnn_spec(channels=(8, 16, 32), classes=2), rng)
    images = (rng.random((96, 48, 48)) * 255).astype(np.uint8)
    x = images[:4, None].astype(np.float32) / 255
    net.backward(net.forward(x, training=True))  # a training step's buffers, batch of 4
    alone = predict_logits(net, images, batch_size=4)
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            # float32 rounding may differ with the BLAS thread count (OpenBLAS Haswell: ~2e-7);
            # an overwritten buffer would give another image's logits, far outside this tolerance
            np.testing.assert_allclose(predict_logits(net, images, batch_size=4, pool=pool), alone,
                                       rtol=1e-5, atol=1e-6)
