"""The original 300x300 fully connected network: numpy engine against PyTorch on the CPU.

Reports training seconds per epoch (2,689 images, the binary set's training split size, batch 64,
SGD with momentum), prediction images per second at batch 1 and 64, and peak memory, each engine
in its own process. Usage: python bench/bench_mlp.py [--images 2689] [--size 300]
Optional requirements: pip install -r bench/requirements.txt (torch==2.13.0, threadpoolctl).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import blas_report, peak_rss_mb, run_child  # noqa: E402

HIDDEN, CLASSES, BATCH = 512, 2, 64


def _data(n, size):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, size, size), dtype=np.uint8), rng.integers(0, CLASSES, n)


def bench_numpy(n, size):
    from tumord.model.predict import to_input
    from tumord.nn.losses import softmax_cross_entropy
    from tumord.nn.network import Network, mlp_spec
    from tumord.nn.optim import SGD

    images, labels = _data(n, size)
    net = Network((1, size, size), mlp_spec(HIDDEN, CLASSES), np.random.default_rng(0))
    opt = SGD(lr=0.01, momentum=0.9)

    def epoch():
        for s in range(n // BATCH):
            idx = slice(s * BATCH, (s + 1) * BATCH)
            logits = net.forward(to_input(images[idx], net.input_shape), training=True)
            _, g = softmax_cross_entropy(logits, labels[idx])
            net.backward(g)
            opt.step(net.named_parameters())

    def predict(batch):
        net.forward(to_input(images[:batch], net.input_shape))

    return _measure(epoch, predict)


def bench_torch(n, size):
    import torch

    torch.set_num_threads(_blas_threads())
    images, labels = _data(n, size)
    images_t, labels_t = torch.from_numpy(images), torch.from_numpy(labels)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(size * size, HIDDEN), torch.nn.BatchNorm1d(HIDDEN),
                              torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(HIDDEN, CLASSES))
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def epoch():
        net.train()
        for s in range(n // BATCH):
            idx = slice(s * BATCH, (s + 1) * BATCH)
            x = images_t[idx].float().div_(255).unsqueeze(1)
            opt.zero_grad(set_to_none=False)
            loss_fn(net(x), labels_t[idx]).backward()
            opt.step()

    def predict(batch):
        net.eval()
        with torch.inference_mode():
            net(images_t[:batch].float().div_(255).unsqueeze(1))

    return _measure(epoch, predict)


def _blas_threads():
    try:
        from threadpoolctl import threadpool_info

        return max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
    except (ImportError, ValueError):
        return 2


def _measure(epoch, predict):
    epoch()  # warm-up (allocations, BLAS buffers)
    times = []
    for _ in range(2):
        t = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - t)
    rates = {}
    for batch in (1, BATCH):
        predict(batch)
        reps = 200 if batch == 1 else 20
        t = time.perf_counter()
        for _ in range(reps):
            predict(batch)
        rates[batch] = reps * batch / (time.perf_counter() - t)
    return {"epoch_s": min(times), "predict_b1_per_s": rates[1], "predict_b64_per_s": rates[BATCH],
            "peak_rss_mb": peak_rss_mb(), "blas": blas_report()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2689)
    ap.add_argument("--size", type=int, default=300)
    ap.add_argument("--child", choices=["numpy", "torch"])
    args = ap.parse_args()
    if args.child:
        fn = bench_numpy if args.child == "numpy" else bench_torch
        print(json.dumps(fn(args.images, args.size)))
        return
    sizes = ("--images", str(args.images), "--size", str(args.size))
    results = {"numpy": run_child(__file__, "numpy", *sizes)}
    try:
        results["torch"] = run_child(__file__, "torch", *sizes)
    except Exception as e:  # torch is optional
        print(f"PyTorch not measured: {e}", file=sys.stderr)
    print(f"MLP {args.size}x{args.size} -> {HIDDEN} -> {CLASSES}, {args.images} images/epoch, batch {BATCH}")
    print(f"numpy BLAS: {results['numpy']['blas']}")
    print(f"{'engine':<8}{'s/epoch':>10}{'img/s b1':>12}{'img/s b64':>12}{'peak MB':>10}")
    for name, r in results.items():
        print(f"{name:<8}{r['epoch_s']:>10.2f}{r['predict_b1_per_s']:>12.0f}{r['predict_b64_per_s']:>12.0f}"
              f"{r['peak_rss_mb']:>10.0f}")
    if "torch" in results:
        n, t = results["numpy"], results["torch"]
        print(f"numpy/torch time per epoch: {n['epoch_s'] / t['epoch_s']:.2f} "
              f"(below 1 means numpy is faster)")


if __name__ == "__main__":
    main()
