"""Elementwise work split between threads, in cache-sized pieces.

numpy runs its elementwise loops on one core and releases the GIL inside them; BLAS is idle
while they run. So memory-bound work (batch norm, pooling, im2col copies, optimizer updates)
runs in pieces on a small pool of threads, and each piece is small enough that its chain of
operations stays in cache instead of making a pass over memory per operation.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

THREADS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
PIECE_BYTES = 1 << 19  # per piece: with its temporaries, within a 1-2 MB L2 cache


@functools.cache
def pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(THREADS, thread_name_prefix="tumord-nn")


def run(fn: Callable[[int], object], parts: int, inline: bool = False) -> None:
    """fn(0) ... fn(parts - 1), on the pool when there is more than one (and not inline)."""
    if parts <= 1 or THREADS == 1 or inline:
        for i in range(parts):
            fn(i)
    else:
        for _ in pool().map(fn, range(parts)):
            pass


def over_channels(fn: Callable[[slice], object], channels: int, bytes_per_channel: int) -> None:
    """fn(slice of channels) over pieces of about PIECE_BYTES, at least one channel each, on the pool."""
    per = max(1, min(PIECE_BYTES // max(bytes_per_channel, 1), -(-channels // THREADS)))
    starts = range(0, channels, per)
    run(lambda i: fn(slice(starts[i], min(starts[i] + per, channels))), len(starts))


def over_blocks(fn: Callable[[slice, slice], object], channels: int, images: int, bytes_per_item: int,
                piece_bytes: int = PIECE_BYTES, inline: bool = False) -> None:
    """fn(channel slice, image slice) over a grid of pieces of about piece_bytes (an item is one
    channel of one image), on the pool unless inline; for work that needs no whole-channel reduction."""
    per_img = max(1, min(images, piece_bytes // max(bytes_per_item, 1)))
    per_ch = max(1, min(channels, piece_bytes // max(per_img * bytes_per_item, 1)))
    if per_ch >= channels and per_img >= images and channels * images > 1:  # one piece: split for the threads
        per_ch, per_img = (-(-channels // THREADS), images) if channels > 1 else (1, -(-images // THREADS))
    grid = [(slice(c, min(c + per_ch, channels)), slice(i, min(i + per_img, images)))
            for c in range(0, channels, per_ch) for i in range(0, images, per_img)]
    run(lambda k: fn(*grid[k]), len(grid), inline)
