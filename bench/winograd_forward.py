"""A Winograd F(2x2, 3x3) forward pass in numpy (Lavin & Gray 2016), timed against tumord's im2col.

A prototype, not part of the engine (docs/benchmarks-engine.md says why): the batch is split into
its four row/column parity planes so that every transform is an add of contiguous shifted slices,
then 16 batched products (C_out x C_in) @ (C_in x tiles). 1 thread, CPU time, best of 5.

    python bench/winograd_forward.py [--chunk 32]   # images per transform (1: one at a time)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tumord.nn import parallel  # noqa: E402
from tumord.nn.conv import Conv2D  # noqa: E402

G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
TAPS = [(1, -1), (0, 0), (1, 0), (0, 1)]  # input row k of a 4x4 tile: (parity plane, shift)


def best_ms(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return min(times) * 1e3


def winograd(x: np.ndarray, u: np.ndarray, out: np.ndarray) -> None:
    """out (C_out, N, H, W) = 'same' 3x3 convolution of x (C, N, H, W); u = G k Gᵀ, (4, 4, C_out, C)."""
    c, n, h, w = x.shape
    co, h2, w2 = u.shape[2], h // 2, w // 2
    planes = np.zeros((2, 2, c, n, h2 + 2, w2 + 2), np.float32)
    for p in range(2):
        for q in range(2):
            planes[p, q, :, :, 1:-1, 1:-1] = x[:, :, p::2, q::2]
    d = [planes[pk, :, :, :, 1 + ok : 1 + ok + h2, :] for pk, ok in TAPS]
    r = np.empty((4, 2, c, n, h2, w2 + 2), np.float32)  # Bᵀ d over rows
    np.subtract(d[0], d[2], out=r[0]); np.add(d[1], d[2], out=r[1])  # noqa: E702
    np.subtract(d[2], d[1], out=r[2]); np.subtract(d[1], d[3], out=r[3])  # noqa: E702
    e = [r[:, pl, :, :, :, 1 + ol : 1 + ol + w2] for pl, ol in TAPS]
    v = np.empty((4, 4, c, n, h2, w2), np.float32)  # ... and over columns
    np.subtract(e[0], e[2], out=v[:, 0]); np.add(e[1], e[2], out=v[:, 1])  # noqa: E702
    np.subtract(e[2], e[1], out=v[:, 2]); np.subtract(e[1], e[3], out=v[:, 3])  # noqa: E702
    m = np.matmul(u.reshape(16, co, c), v.reshape(16, c, -1)).reshape(4, 4, co, n, h2, w2)
    t = np.empty((2, 4, co, n, h2, w2), np.float32)  # Aᵀ m over rows, then columns into out
    np.add(m[0], m[1], out=t[0]); t[0] += m[2]  # noqa: E702
    np.subtract(m[1], m[2], out=t[1]); t[1] -= m[3]  # noqa: E702
    for p in range(2):
        o = out[:, :, p::2, :]
        np.add(t[p, 0], t[p, 1], out=o[..., 0::2]); o[..., 0::2] += t[p, 2]  # noqa: E702
        np.subtract(t[p, 1], t[p, 2], out=o[..., 1::2]); o[..., 1::2] -= t[p, 3]  # noqa: E702


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunk", type=int, default=32, help="images per transform")
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
    parallel.THREADS = 1
    rng = np.random.default_rng(0)
    for c, co, size in [(16, 32, 64), (32, 64, 32), (64, 128, 16), (128, 256, 8)]:
        conv = Conv2D(c, co, 3, "same", False, rng)
        x = rng.standard_normal((c, args.batch, size, size), dtype=np.float32)
        u = np.einsum("ak,ockl,bl->aboc", G, conv.params["kernel"], G).astype(np.float32)
        out = np.empty((co, args.batch, size, size), np.float32)

        def run():
            for i in range(0, args.batch, args.chunk):
                winograd(x[:, i : i + args.chunk], u, out[:, i : i + args.chunk])

        ref = conv.forward(x.transpose(1, 0, 2, 3), training=True).transpose(1, 0, 2, 3)
        run()
        err = np.abs(out - ref).max() / np.abs(ref).max()
        t_im2col = best_ms(lambda: conv.forward(x.transpose(1, 0, 2, 3), training=True))
        print(f"{c}->{co} @{size}: im2col {t_im2col:.1f} ms, Winograd ({args.chunk} images per transform) "
              f"{best_ms(run):.1f} ms, relative error {err:.1e}")


if __name__ == "__main__":
    main()
