"""Batch-norm statistics recomputed from the final weights over the training images."""
import numpy as np

from tumord.model.predict import to_input
from tumord.nn.network import Network, mlp_spec
from tumord.training.precise_bn import recompute_batchnorm_statistics


def test_running_statistics_become_the_average_batch_statistics():
    rng = np.random.default_rng(0)
    net = Network((1, 4, 4), mlp_spec(hidden=8, classes=2, dropout=0.0), rng)
    bn = net.layers[2]
    bn.buffers["running_mean"][...] = 100.0  # stale values the recomputation must replace
    bn.buffers["running_var"][...] = 100.0
    images = rng.integers(0, 256, (21, 4, 4), dtype=np.uint8)
    idx = np.arange(1, 21)  # image 0 is not in the training set

    used = recompute_batchnorm_statistics(net, images, idx, batch_size=10, rng=np.random.default_rng(3))

    assert used == 2 and bn.momentum == 0.1
    dense = net.layers[1]
    order = idx[np.random.default_rng(3).permutation(len(idx))]
    acts = [to_input(images[np.sort(order[b * 10 : (b + 1) * 10])], (1, 4, 4)).reshape(10, -1)
            @ dense.params["W"] + dense.params["b"] for b in range(2)]
    np.testing.assert_allclose(bn.buffers["running_mean"], np.mean([a.mean(0) for a in acts], axis=0), rtol=1e-5)
    np.testing.assert_allclose(bn.buffers["running_var"], np.mean([a.var(0, ddof=1) for a in acts], axis=0),
                               rtol=1e-4)
    single = net.forward(to_input(images[:2], (1, 4, 4)))
    assert np.isfinite(single).all() and not np.allclose(single[0], single[1])
