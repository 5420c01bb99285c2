"""Convolution and pooling layers for (N, C, H, W) input, plus the CNN architecture.

Memory layout: a convolution computes all its outputs with one matrix product whose result is
channel-major, (C, N, H, W) in memory. It returns that as an (N, C, H, W) *view*; batch norm and
ReLU keep the layout (numpy's order="K"), the pooling layers here keep it too, and the next
convolution reads it back with a free transpose. So no layer pays for a transpose copy. Every
layer still accepts input of any strides.
"""
from __future__ import annotations

import numpy as np

from tumord.nn import parallel
from tumord.nn.im2col import col2im, im2col
from tumord.nn.layers import Layer


def _channel_major(n: int, c: int, h: int, w: int, dtype, zeros: bool = False) -> np.ndarray:
    """An (N, C, H, W) array stored as (C, N, H, W), the layout the convolutions produce."""
    return (np.zeros if zeros else np.empty)((c, n, h, w), dtype).transpose(1, 0, 2, 3)


def _flat(a: np.ndarray, rows: int) -> np.ndarray:
    """a (rows..., images, positions...) as a (rows, images x positions) matrix, always a view (a
    slice of images of a buffer is one), so a product may write into it."""
    m = a.reshape(rows, -1)
    if not np.may_share_memory(m, a):
        raise AssertionError("a slice of images must reshape to a view")
    return m


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


class Conv2D(Layer):
    """Stride-1 convolution as im2col (nn/im2col.py) + one matrix product (forward, weight and
    input gradients)."""

    def __init__(self, in_channels: int, filters: int, kernel=3, padding: str = "same", bias: bool = True,
                 rng: np.random.Generator | None = None):
        super().__init__()
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        rng = rng or np.random.default_rng(0)
        self.in_channels, self.filters, self.padding = in_channels, filters, padding
        self.kh, self.kw = _pair(kernel)
        # 'same': the top/left pad is the smaller half for even kernels (as TensorFlow does)
        self.pad = ((self.kh - 1) // 2, (self.kw - 1) // 2) if padding == "same" else (0, 0)
        scale = np.sqrt(2.0 / (in_channels * self.kh * self.kw))  # He, for the ReLU that follows
        shape = (filters, in_channels, self.kh, self.kw)
        self.params["kernel"] = (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float32)
        if bias:
            self.params["b"] = np.zeros(filters, np.float32)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._bufs: dict[str, np.ndarray] = {}  # training's columns, output and input gradient
        self._cols: np.ndarray | None = None  # columns kept for backward

    def output_shape(self, input_shape):
        _, h, w = input_shape
        return (self.filters, *self._out_hw(h, w))

    def _out_hw(self, h: int, w: int) -> tuple[int, int]:
        if self.padding == "same":
            return h, w
        if h < self.kh or w < self.kw:
            raise ValueError(f"a {self.kh}x{self.kw} 'valid' convolution needs at least that input, got {h}x{w}")
        return h - self.kh + 1, w - self.kw + 1

    def _buffer(self, name: str, shape, dtype, training: bool) -> np.ndarray:
        """Training keeps its buffers across steps (replaced when the batch shape changes): fresh
        arrays this large cost a page fault per 4 kB. Inference takes new ones every time, so
        predictions may run in several threads at once and never overwrite columns a pending
        backward still needs."""
        if not training:
            return np.empty(shape, dtype)
        buf = self._bufs.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._bufs[name] = np.empty(shape, dtype)
        return buf

    def forward(self, x, training=False):
        return self._convolve(x, self.params["kernel"], self.params.get("b"), training)

    def forward_folded(self, x, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
        """Inference with a per-channel affine map that follows (batch norm's) folded into the
        kernel and bias: one pass over the output fewer, and the same result."""
        kernel = self.params["kernel"] * scale[:, None, None, None]
        bias = shift if "b" not in self.params else self.params["b"] * scale + shift
        return self._convolve(x, kernel, bias, training=False)

    def _convolve(self, x, k, bias, training):
        n, c, h, w = x.shape
        ho, wo = self._out_hw(h, w)
        dtype = np.result_type(x.dtype, k.dtype)
        rows = c * self.kh * self.kw
        cols = self._buffer("cols", (c, self.kh * self.kw, n, ho, wo), dtype, training)
        out = self._buffer("out", (self.filters, n, ho * wo), dtype, training)
        xc, k2 = x.transpose(1, 0, 2, 3), k.reshape(self.filters, -1)
        bias = None if bias is None else bias[:, None].astype(dtype, copy=False)
        parts = parallel.split_parts(n)

        def part(_, ns):
            # one slice of images: its columns, then its product (one BLAS thread when split).
            # Unsplit inference stays in the caller's thread: the service predicts on several
            im2col(xc[:, ns], cols[:, :, ns], self.kh, self.kw, self.pad, inline=parts > 1 or not training)
            o = _flat(out[:, ns], self.filters)
            np.matmul(k2, _flat(cols[:, :, ns], rows), out=o)
            if bias is not None:
                o += bias

        parallel.over_slices(part, n, parts)
        if training:
            self._cols, self._in_hw = cols, (h, w)
        return out.reshape(self.filters, n, ho, wo).transpose(1, 0, 2, 3)

    def backward(self, grad_out, need_input_grad=True):
        cols, self._cols = self._cols, None
        c, taps, n, ho, wo = cols.shape
        rows = c * taps
        g = np.ascontiguousarray(grad_out.transpose(1, 0, 2, 3)).reshape(self.filters, n, -1)  # free if channel-major
        k2 = self.params["kernel"].reshape(self.filters, -1)
        dx = self._buffer("dx", (c, n, *self._in_hw), cols.dtype, training=True) if need_input_grad else None
        parts = parallel.split_parts(n)
        partial: list[np.ndarray | None] = [None] * parts

        def part(i, ns):
            cols2, g2 = _flat(cols[:, :, ns], rows), _flat(g[:, ns], self.filters)
            # as (K, C_out) = cols @ g.T: the same product, but OpenBLAS runs this orientation ~10% faster
            partial[i] = cols2 @ g2.T
            if need_input_grad:  # the columns are used up: their buffer takes the column gradients
                np.matmul(k2.T, g2, out=cols2)
                col2im(cols[:, :, ns], dx[:, ns], self.kh, self.kw, self.pad, inline=parts > 1)

        parallel.over_slices(part, n, parts)
        for p in partial[1:]:  # the weight gradient is the sum of the slices' (float order aside)
            partial[0] += p
        self.grads["kernel"].reshape(self.filters, -1)[...] = partial[0].T
        if "b" in self.params:
            self.grads["b"][...] = g.sum(axis=(1, 2))
        return None if dx is None else dx.transpose(1, 0, 2, 3)  # (C, N, H, W) memory, like the forward output

    def config(self):
        kernel = self.kh if self.kh == self.kw else [self.kh, self.kw]
        return {"type": "conv2d", "filters": self.filters, "kernel": kernel, "padding": self.padding,
                "bias": "b" in self.params}


class _Pool2D(Layer):
    """Non-overlapping size x size windows (stride = size); a leftover last row/column is dropped.

    Pooling is separable: first across the rows of each window, whose slices are contiguous in
    memory (fast vectorized ops on the big input), then across the columns of the row-pooled,
    size-times smaller array, whose slices have a stride.
    """

    kind = ""

    def __init__(self, size: int = 2):
        super().__init__()
        if int(size) < 2:
            raise ValueError(f"pool size must be at least 2, got {size}")
        self.size = int(size)

    def output_shape(self, input_shape):
        c, h, w = input_shape
        return (c, h // self.size, w // self.size)

    def _rows(self, x: np.ndarray) -> list[np.ndarray]:
        p, ho, wo = self.size, x.shape[2] // self.size, x.shape[3] // self.size
        return [x[:, :, i : ho * p : p, : wo * p] for i in range(p)]

    def _cols(self, x: np.ndarray) -> list[np.ndarray]:
        return [x[:, :, :, j :: self.size] for j in range(self.size)]

    def _grad_buffers(self):
        """(dx, its row-window views, the row-pooled gradient and its column views)."""
        (n, c, h, w), dtype = self._in
        exact = h % self.size == 0 and w % self.size == 0  # otherwise the dropped edge gets zeros
        dx = _channel_major(n, c, h, w, dtype, zeros=not exact)
        drows = _channel_major(n, c, h // self.size, w // self.size * self.size, dtype)
        return dx, self._rows(dx), drows, self._cols(drows)

    def config(self):
        return {"type": self.kind, "size": self.size}


def _max_argmax(views: list[np.ndarray], with_arg: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Elementwise max over the views and (for training) the index of the first view holding it:
    ties have one winner, so a flat region does not duplicate the gradient."""
    out = np.maximum(views[0], views[1])
    arg = (views[1] > views[0]).view(np.uint8) if with_arg else None
    for i, v in enumerate(views[2:], 2):
        if with_arg:
            np.copyto(arg, i, where=v > out)
        np.maximum(out, v, out=out)
    return out, arg


def _route(grad: np.ndarray, arg: np.ndarray, outs: list[np.ndarray]) -> None:
    """outs[i] = grad where arg == i, else 0."""
    for i, d in enumerate(outs[1:], 1):
        np.multiply(grad, arg == i, out=d)
    if len(outs) == 2:  # the rest, exactly, and cheaper than a mixed float * bool product
        np.subtract(grad, outs[1], out=outs[0])
    else:
        np.multiply(grad, arg == 0, out=outs[0])


class MaxPool2D(_Pool2D):
    kind = "maxpool"

    def forward(self, x, training=False):
        rows, row_arg = _max_argmax(self._rows(x), training)
        out, col_arg = _max_argmax(self._cols(rows), training)
        if training:
            self._args, self._in = (row_arg, col_arg), (x.shape, x.dtype)
        return out

    def backward(self, grad_out, need_input_grad=True):
        (row_arg, col_arg), self._args = self._args, None
        dx, dx_rows, drows, drows_cols = self._grad_buffers()
        _route(grad_out, col_arg, drows_cols)  # each window's gradient goes to its winning element
        _route(drows, row_arg, dx_rows)
        return dx


class GlobalAvgPool(Layer):
    """(N, C, H, W) -> (N, C): the mean of each channel."""

    def forward(self, x, training=False):
        self._in = (x.shape, x.dtype)
        return x.mean(axis=(2, 3))

    def backward(self, grad_out, need_input_grad=True):
        (n, c, h, w), dtype = self._in
        dx = _channel_major(n, c, h, w, dtype)
        dx[...] = (grad_out / (h * w))[:, :, None, None]
        return dx

    def output_shape(self, input_shape):
        return (input_shape[0],)

    def config(self):
        return {"type": "globalavgpool"}


def _image_channels(shape, kind: str) -> int:
    if len(shape) != 3:
        raise ValueError(f"{kind} needs (channels, height, width) input, got shape {tuple(shape)}")
    return int(shape[0])


def _build_conv2d(spec, shape, rng):
    return Conv2D(_image_channels(shape, "conv2d"), spec["filters"], spec.get("kernel", 3),
                  spec.get("padding", "same"), spec.get("bias", True), rng)


def _build_pool(cls):
    def build(spec, shape, rng):
        _image_channels(shape, cls.kind)
        return cls(spec.get("size", 2))
    return build


def _build_global_avg_pool(spec, shape, rng):
    _image_channels(shape, "globalavgpool")
    return GlobalAvgPool()


LAYER_BUILDERS = {
    "conv2d": _build_conv2d,
    "maxpool": _build_pool(MaxPool2D),
    "globalavgpool": _build_global_avg_pool,
}


def cnn_spec(channels=(16, 32, 64, 128, 256), classes: int = 2, dropout: float = 0.2) -> list[dict]:
    """Blocks of conv3x3 (no bias: batch norm follows) + batch norm + ReLU + 2x2 max pool,
    then global average pooling, dropout and a dense classifier.

    The pooling comes before the ReLU: both are monotone, so the function and its gradient are
    the same as ReLU-then-pool, and the ReLU works on a quarter of the values.
    """
    spec: list[dict] = []
    for filters in channels:
        spec += [
            {"type": "conv2d", "filters": filters, "kernel": 3, "padding": "same", "bias": False},
            {"type": "batchnorm"},
            {"type": "maxpool", "size": 2},
            {"type": "relu"},
        ]
    return spec + [{"type": "globalavgpool"}, {"type": "dropout", "rate": dropout}, {"type": "dense", "units": classes}]
