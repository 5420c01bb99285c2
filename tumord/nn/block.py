"""Training of cnn_spec's block, conv -> batch norm -> max pool -> ReLU, as one unit.

The four layers one after another make about a dozen passes over the convolution's output (the
largest array of a step) and run them on one core. This unit computes the same function and
gradients with one pass there and one back, on the thread pool, one cache-sized piece of
channels at a time:

- Batch norm is a per-channel map y -> a*y + b with a = gamma/std >= 0 once the sign of gamma is
  moved into the convolution's kernel (u = sign * y, a negated output channel). A map that
  increases commutes with max pooling, so the pool picks its winners in u, and the map and the
  ReLU run on the pooled quarter of the values.
- Backward, batch norm's input gradient is dL/du = a*g + c1*u + c0 per channel, g being the
  pooled gradient routed to the winners, and its sums (for gamma, beta, c1, c0) are sums over
  the pooled values, where g is non-zero. So u's buffer becomes dL/dy in place.
"""
from __future__ import annotations

import numpy as np

from tumord.nn import parallel
from tumord.nn.conv import Conv2D, MaxPool2D, _route
from tumord.nn.layers import BatchNorm, Layer, ReLU


def _max_into(views: list[np.ndarray], out: np.ndarray, arg: np.ndarray) -> None:
    """out = elementwise max of the views, arg = index of the first view holding it (as MaxPool2D)."""
    np.maximum(views[0], views[1], out=out)
    np.greater(views[1], views[0], out=arg.view(np.bool_))
    for i, v in enumerate(views[2:], 2):
        np.copyto(arg, i, where=v > out)
        np.maximum(out, v, out=out)


class ConvBlock:
    """Training forward and backward of Conv2D, BatchNorm, MaxPool2D, ReLU; the layers keep their
    parameters, gradients and running statistics, exactly as if each had run on its own."""

    def __init__(self, conv: Conv2D, bn: BatchNorm, pool: MaxPool2D, relu: ReLU):
        self.conv, self.bn, self.pool, self.relu = conv, bn, pool, relu
        self.params = conv.params  # what Network.backward asks: does this unit learn?
        self._bufs: dict[str, np.ndarray] = {}

    def _buffer(self, name, shape, dtype):
        buf = self._bufs.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._bufs[name] = np.empty(shape, dtype)
        return buf

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        conv, bn, p = self.conv, self.bn, self.pool.size
        gamma, beta = bn.params["gamma"], bn.params["beta"]
        sign = np.where(gamma < 0, -1, 1).astype(gamma.dtype)
        bias = conv.params.get("b")
        u = conv._convolve(x, conv.params["kernel"] * sign[:, None, None, None],
                           None if bias is None else bias * sign, training=True)
        n, c, h, w = u.shape
        uc = u.transpose(1, 0, 2, 3)  # (C, N, H, W), contiguous
        ho, wo = h // p, w // p
        dt = uc.dtype
        pooled = self._buffer("pooled", (c, n, ho, wo), dt)
        row_arg = self._buffer("row_arg", (c, n, ho, wo * p), np.uint8)
        col_arg = self._buffer("col_arg", (c, n, ho, wo), np.uint8)
        out = self._buffer("out", (c, n, ho, wo), dt)
        mean, var, inv_std, scale = (np.empty(c, dt) for _ in range(4))
        abs_gamma = np.abs(gamma)
        count = n * h * w

        def piece(cs):
            rows = uc[cs].reshape(cs.stop - cs.start, -1)
            m = rows.mean(axis=1)
            centred = rows - m[:, None]
            v = np.vecdot(centred, centred) / count
            mean[cs], var[cs], inv_std[cs] = m, v, 1 / np.sqrt(v + bn.eps)
            a = scale[cs] = abs_gamma[cs] * inv_std[cs]
            row_max = np.empty(row_arg[cs].shape, dt)
            _max_into(self.pool._rows(uc[cs]), row_max, row_arg[cs])
            _max_into(self.pool._cols(row_max), pooled[cs], col_arg[cs])
            o = out[cs]
            np.multiply(pooled[cs], a[:, None, None, None], out=o)
            o += (beta[cs] - m * a)[:, None, None, None]
            np.maximum(o, 0, out=o)

        parallel.over_channels(piece, c, n * h * w * u.itemsize)
        # the statistics of y = sign * u, as BatchNorm.forward keeps them
        mom, rm, rv = bn.momentum, bn.buffers["running_mean"], bn.buffers["running_var"]
        rm[...] = (1 - mom) * rm + mom * (mean * sign)
        rv[...] = (1 - mom) * rv + mom * var * (count / max(count - 1, 1))  # unbiased, as PyTorch
        self._cache = (u, sign, mean, inv_std, scale)
        return out.transpose(1, 0, 2, 3)

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        u, sign, mean, inv_std, a = self._cache
        self._cache = None
        bn = self.bn
        beta = bn.params["beta"]
        g = grad_out.transpose(1, 0, 2, 3)  # (C, N, Ho, Wo)
        uc = u.transpose(1, 0, 2, 3)
        n, c, h, w = u.shape
        count = n * h * w
        pooled = self._bufs["pooled"]
        row_arg, col_arg = self._bufs["row_arg"], self._bufs["col_arg"]
        d_gamma, d_beta = bn.grads["gamma"], bn.grads["beta"]

        def piece(cs):
            k = cs.stop - cs.start
            shift = (beta[cs] - mean[cs] * a[cs])[:, None, None, None]
            dp = g[cs] * (pooled[cs] * a[cs][:, None, None, None] + shift > 0)  # through the ReLU
            sum_g = dp.reshape(k, -1).sum(axis=1)
            sum_gx = np.vecdot(dp.reshape(k, -1), (pooled[cs] - mean[cs][:, None, None, None]).reshape(k, -1))
            sum_gx *= inv_std[cs]  # sum of g * normalized u over the winners
            d_beta[cs], d_gamma[cs] = sum_g, sum_gx * sign[cs]
            # dL/dy = sign * (a*g + c1*u + c0): u's buffer becomes the gradient in place
            s_a = sign[cs] * a[cs]
            c1 = -s_a * inv_std[cs] * sum_gx / count
            c0 = -s_a * sum_g / count - c1 * mean[cs]
            dy = uc[cs]
            np.multiply(dy, c1[:, None, None, None], out=dy)
            dy += c0[:, None, None, None]
            dp *= s_a[:, None, None, None]
            drows = np.empty(row_arg[cs].shape, dp.dtype)
            _route(dp, col_arg[cs], self.pool._cols(drows))
            for i, view in enumerate(self.pool._rows(dy)):
                view += drows * (row_arg[cs] == i)

        parallel.over_channels(piece, c, n * h * w * u.itemsize)
        return self.conv.backward(u, need_input_grad)


def training_units(layers: list[Layer]) -> list:
    """The layers as training runs them: each conv, batch norm, max pool, ReLU run of them as one
    ConvBlock, every other layer on its own."""
    units, i = [], 0
    while i < len(layers):
        run = layers[i : i + 4]
        kinds = [Conv2D, BatchNorm, MaxPool2D, ReLU]
        if len(run) == 4 and all(type(layer) is kind for layer, kind in zip(run, kinds)) \
                and run[0].filters == run[1].features:
            units.append(ConvBlock(*run))
            i += 4
        else:
            units.append(layers[i])
            i += 1
    return units
