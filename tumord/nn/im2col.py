"""im2col and col2im for stride-1 convolutions, on channel-major (C, N, H, W) arrays.

The column buffer is (C_in, taps, N, H_out, W_out): each kernel tap is one shifted copy of the
whole batch, never a loop over pixels or images. Out-of-image positions are zero in it, so the
input is never padded.

With 'same' padding the output has the input's geometry, and a tap's shift (dy, dx) is one
shift by dy * W + dx of the flattened image: a single long copy (or add) per tap and piece,
where slicing rows and columns would make numpy loop over rows of 8-64 values (at 8x8 that
overhead was most of col2im's time). The positions where the flat shift wraps from one row
into the next are exactly the out-of-image column strips, which are zeroed.
"""
from __future__ import annotations

import numpy as np

from tumord.nn import parallel


def _offsets(kh: int, kw: int, pad: tuple[int, int]):
    """Per kernel tap: its index and its input offset (dy, dx) from the output position."""
    for ky in range(kh):
        for kx in range(kw):
            yield ky * kw + kx, ky - pad[0], kx - pad[1]


def _sliced_taps(kh, kw, pad, h, w, ho, wo):
    """Per tap: index, the output rows/cols it reaches and the input rows/cols they read."""
    for t, dy, dx in _offsets(kh, kw, pad):
        y0, y1 = max(0, -dy), min(ho, h - dy)
        x0, x1 = max(0, -dx), min(wo, w - dx)
        yield t, slice(y0, y1), slice(x0, x1), slice(y0 + dy, y1 + dy), slice(x0 + dx, x1 + dx)


def _flat_taps(kh, kw, pad, h, w):
    """Per tap: index, column offset dx, and the flat shift s with the output positions [lo, hi)
    of a flattened image whose input position (+ s) exists."""
    for t, dy, dx in _offsets(kh, kw, pad):
        s = dy * w + dx
        lo = min(h * w, max(0, -s))
        yield t, dx, s, lo, max(lo, h * w - max(0, s))


def _zero_wrapped(block: np.ndarray, dx: int) -> None:
    """Zeroes the output columns whose input column (x + dx) is outside the image."""
    w = block.shape[-1]
    if dx > 0:
        block[..., max(0, w - dx) :] = 0
    elif dx < 0:
        block[..., : min(w, -dx)] = 0


def im2col(xc: np.ndarray, cols: np.ndarray, kh: int, kw: int, pad: tuple[int, int], inline: bool) -> None:
    """Fills cols (C, kh*kw, N, Ho, Wo) from xc (C, N, H, W)."""
    c, taps, n, ho, wo = cols.shape
    h, w = xc.shape[2:]
    same = (ho, wo) == (h, w)

    def piece(cs, ns):
        if same:
            src = xc[cs, ns].reshape(cs.stop - cs.start, ns.stop - ns.start, h * w)
            for t, dx, s, lo, hi in _flat_taps(kh, kw, pad, h, w):
                dst = cols[cs, t, ns]
                flat = dst.reshape(src.shape)  # a view: each image's positions are contiguous
                flat[..., lo:hi] = src[..., lo + s : hi + s]
                flat[..., :lo] = 0
                flat[..., hi:] = 0
                _zero_wrapped(dst, dx)
            return
        for t, oy, ox, iy, ix in _sliced_taps(kh, kw, pad, h, w, ho, wo):
            dst = cols[cs, t, ns]
            dst[:, :, oy, ox] = xc[cs, ns, iy, ix]
            dst[:, :, : oy.start] = 0
            dst[:, :, oy.stop :] = 0
            dst[:, :, :, : ox.start] = 0
            dst[:, :, :, ox.stop :] = 0

    parallel.over_blocks(piece, c, n, taps * ho * wo * cols.itemsize, piece_bytes=1 << 22, inline=inline)


def col2im(dcols: np.ndarray, dx: np.ndarray, kh: int, kw: int, pad: tuple[int, int], inline: bool = False) -> None:
    """dx (C, N, H, W) = the sum of every tap's column gradients at its input positions.
    dcols is used up (its wrapped strips are zeroed)."""
    c, taps, n, ho, wo = dcols.shape
    h, w = dx.shape[2:]
    same = (ho, wo) == (h, w)

    def piece(cs, ns):
        if same:
            # the unshifted tap covers the whole image: it initializes dx instead of a pass of zeros
            out = dx[cs, ns].reshape(cs.stop - cs.start, ns.stop - ns.start, h * w)
            centre = pad[0] * kw + pad[1]
            out[...] = dcols[cs, centre, ns].reshape(out.shape)
            for t, dxx, s, lo, hi in _flat_taps(kh, kw, pad, h, w):
                if t != centre:
                    src = dcols[cs, t, ns]
                    _zero_wrapped(src, dxx)
                    out[..., lo + s : hi + s] += src.reshape(out.shape)[..., lo:hi]
            return
        dx[cs, ns] = 0
        for t, oy, ox, iy, ix in _sliced_taps(kh, kw, pad, h, w, ho, wo):
            dx[cs, ns, iy, ix] += dcols[cs, t, ns, oy, ox]

    parallel.over_blocks(piece, c, n, h * w * dx.itemsize, inline=inline)
