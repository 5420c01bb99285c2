"""Where a CNN training step's time goes: each layer's (or fused block's) forward and backward.

    python bench/profile_step.py [--threads 1] [--batch 32] [--steps 5] [--engine PATH]

--threads 1 times CPU time (steadiest on a shared machine); more threads time wall clock.
--engine PATH profiles another checkout's tumord/ (e.g. an older commit's, via `git worktree`).
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--engine", type=Path, default=Path(__file__).resolve().parents[1])
    args = ap.parse_args()
    sys.path.insert(0, str(args.engine))
    from threadpoolctl import threadpool_limits

    from tumord.nn.conv import cnn_spec
    from tumord.nn.losses import softmax_cross_entropy
    from tumord.nn.network import Network
    from tumord.nn.optim import AdamW

    threadpool_limits(args.threads, user_api="blas")
    try:
        from tumord.nn import parallel

        parallel.THREADS = args.threads
    except ImportError:  # an engine from before tumord.nn.parallel
        pass
    clock = time.process_time if args.threads == 1 else time.perf_counter
    rng = np.random.default_rng(0)
    net = Network((1, args.size, args.size), cnn_spec(), rng)
    units = getattr(net, "_units", net.layers)
    x = rng.standard_normal((args.batch, 1, args.size, args.size)).astype(np.float32)
    labels = rng.integers(0, 2, args.batch)
    opt = AdamW(1e-3)
    fwd, bwd, steps = np.zeros(len(units)), np.zeros(len(units)), []
    first = next(i for i, u in enumerate(units) if u.params)
    for step in range(args.steps + 1):  # the first is a warm-up
        t0, h = clock(), x
        tf, tb = [], [0.0] * len(units)
        for u in units:
            t = clock()
            h = u.forward(h, True)
            tf.append(clock() - t)
        g = softmax_cross_entropy(h, labels)[1]
        for i in range(len(units) - 1, first - 1, -1):
            t = clock()
            g = units[i].backward(g, need_input_grad=i > first)
            tb[i] = clock() - t
        opt.step(net.named_parameters())
        if step:
            fwd, bwd = fwd + tf, bwd + tb
            steps.append(clock() - t0)
    print(f"{'unit':<18}{'fwd ms':>8}{'bwd ms':>8}   ({'CPU' if args.threads == 1 else 'wall'} time, "
          f"mean of {args.steps} steps, {args.threads} thread(s))")
    for i, u in enumerate(units):
        print(f"{i:2d} {type(u).__name__:<15}{fwd[i] / args.steps * 1e3:8.1f}{bwd[i] / args.steps * 1e3:8.1f}")
    s = np.array(steps) * 1e3
    print(f"step ms min {s.min():.0f} median {np.median(s):.0f} max {s.max():.0f}; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
