"""Work split between threads: elementwise work in cache-sized pieces, matrix products by images.

numpy runs its elementwise loops on one core and releases the GIL inside them; BLAS is idle
while they run. So memory-bound work (batch norm, pooling, im2col copies, optimizer updates)
runs in pieces on a small pool of threads, and each piece is small enough that its chain of
operations stays in cache instead of making a pass over memory per operation.

Matrix products: OpenBLAS splits one product between its threads, and on the convolutions'
small and medium products its threads wait on each other (2 threads ran them 1.5-2.3x slower
than oneDNN, which splits over images). over_slices gives each thread its own images and one
BLAS thread instead: the same products, half as wide each, with no synchronization inside.
Dense layers split their inner dimension the same way (each thread reads half the weights).
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

THREADS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
PIECE_BYTES = 1 << 19  # per piece: with its temporaries, within a 1-2 MB L2 cache


@functools.cache
def pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(THREADS, thread_name_prefix="tumord-nn")


def run(fn: Callable[[int], object], parts: int, inline: bool = False) -> None:
    """fn(0) ... fn(parts - 1), on the pool when there is more than one (and not inline)."""
    # a task on the pool that split its own work would wait for workers that are all waiting
    if parts <= 1 or THREADS == 1 or inline or threading.current_thread().name.startswith("tumord-nn"):
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


SPLIT = os.environ.get("TUMORD_SPLIT_IMAGES", "1") != "0"  # 0: BLAS's own threads only (benchmarks)


@functools.cache
def _blas():
    """(get, set) of numpy's OpenBLAS thread count (OpenCV may load another BLAS), or None for a
    BLAS whose count this does not know how to set (then nothing is split). Called directly:
    threadpoolctl lets only one Python thread ever set it, and the pool's threads must."""
    from threadpoolctl import ThreadpoolController

    np.ones(1) @ np.ones(1)  # numpy may load its BLAS lazily: have it loaded
    libs = [lib for lib in ThreadpoolController().select(internal_api="openblas").lib_controllers
            if getattr(lib, "threading_layer", "") == "pthreads"]
    for lib in sorted(libs, key=lambda lib: "numpy" not in lib.filepath):
        for prefix, suffix in itertools.product(("", "scipy_"), ("", "64_")):
            get = getattr(lib.dynlib, f"{prefix}openblas_get_num_threads{suffix}", None)
            set_ = getattr(lib.dynlib, f"{prefix}openblas_set_num_threads{suffix}", None)
            if get is not None and set_ is not None:
                return get, set_
    return None


def blas_threads() -> int:
    blas = _blas()
    return blas[0]() if blas is not None else 1


_region = threading.Lock()
_depth, _saved = 0, 1


@contextlib.contextmanager
def one_blas_thread():
    """BLAS at one thread inside, restored after the last of nested or concurrent regions: the
    count is process-wide, so a plain save-and-restore per caller would leave it wrong."""
    global _depth, _saved
    blas = _blas()
    with _region:
        if _depth == 0 and blas is not None:
            _saved = blas[0]()
            blas[1](1)
        _depth += 1
    try:
        yield
    finally:
        with _region:
            _depth -= 1
            if _depth == 0 and blas is not None:
                blas[1](_saved)


def split_parts(items: int) -> int:
    """Slices to split a batch (or a product's inner dimension) into: as many as BLAS may use
    threads. A caller that set BLAS to one thread (the service, which predicts chunks in
    parallel itself) gets one."""
    return max(1, min(THREADS, blas_threads(), items)) if SPLIT else 1


def over_slices(fn: Callable[[int, slice], object], items: int, parts: int) -> None:
    """fn(k, k-th of parts consecutive slices of range(items)), on the pool with one BLAS thread
    each; with one part, fn(0, slice of all) here, BLAS as it is."""
    if parts <= 1:
        fn(0, slice(0, items))
        return
    bounds = [items * k // parts for k in range(parts + 1)]
    with one_blas_thread():
        run(lambda k: fn(k, slice(bounds[k], bounds[k + 1])), parts)
