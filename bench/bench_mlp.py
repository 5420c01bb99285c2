"""The original 300x300 fully connected network: numpy engine against PyTorch on the CPU.

Reports training seconds per epoch (2,689 images, the binary set's training split size, batch 64,
SGD with momentum), prediction images per second at batch 1 and 64, and peak memory, each engine
in its own process, alternated over --rounds (numpy, PyTorch, numpy, ...); every figure and ratio
is printed as min-median-max over the rounds, with the BLAS kernel that ran.
Usage: python bench/bench_mlp.py [--images 2689] [--size 300] [--rounds 3] [--threads N] [--cpu-time] [--unsplit]
On a shared machine, `--threads 1 --cpu-time` gives the steadiest comparison. With more than one
thread the engine splits the input layer's products between threads (tumord/nn/parallel.py);
--unsplit adds, in the same alternation, the engine with that split off (BLAS's own threads).
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
from common import blas_report, peak_rss_mb, run_child, spread, torch_report  # noqa: E402

HIDDEN, CLASSES, BATCH = 512, 2, 64
CLOCK = time.perf_counter


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
    report = torch_report(torch)
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

    return {**_measure(epoch, predict), "torch": report}


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
        t = CLOCK()
        epoch()
        times.append(CLOCK() - t)
    rates = {}
    for batch in (1, BATCH):
        predict(batch)
        reps = 200 if batch == 1 else 20
        t = CLOCK()
        for _ in range(reps):
            predict(batch)
        rates[batch] = reps * batch / (CLOCK() - t)
    return {"epoch_s": min(times), "predict_b1_per_s": rates[1], "predict_b64_per_s": rates[BATCH],
            "peak_rss_mb": peak_rss_mb(), "blas": blas_report()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2689)
    ap.add_argument("--size", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, help="BLAS and PyTorch threads (default: numpy's BLAS default)")
    ap.add_argument("--cpu-time", action="store_true", help="process CPU time; valid with --threads 1 only")
    ap.add_argument("--unsplit", action="store_true", help="also time the numpy engine without its split")
    ap.add_argument("--child", choices=["numpy", "numpy-unsplit", "torch"])
    args = ap.parse_args()
    if args.cpu_time and args.threads != 1:
        ap.error("--cpu-time needs --threads 1 (idle worker threads spin and count as CPU time)")
    if args.child:
        global CLOCK
        if args.threads:
            from threadpoolctl import threadpool_limits

            threadpool_limits(args.threads, user_api="blas")
        if args.cpu_time:
            CLOCK = time.process_time
            try:
                from tumord.nn import parallel

                parallel.THREADS = 1  # CPU time counts every thread's: one thread, as BLAS
            except ImportError:  # an engine from before tumord.nn.parallel (for before/after runs)
                pass
        if args.child == "numpy-unsplit":
            from tumord.nn import parallel

            parallel.SPLIT = False
        fn = bench_numpy if args.child.startswith("numpy") else bench_torch
        print(json.dumps(fn(args.images, args.size)))
        return
    opts = ["--images", str(args.images), "--size", str(args.size)] + \
        (["--threads", str(args.threads)] if args.threads else []) + ["--cpu-time"] * args.cpu_time
    runs = {"numpy": [], **({"numpy-unsplit": []} if args.unsplit else {}), "torch": []}
    for _ in range(args.rounds):
        for engine in list(runs):
            try:
                runs[engine].append(run_child(__file__, engine, *opts))
            except Exception as e:  # torch is optional
                print(f"PyTorch not measured: {e}", file=sys.stderr)
                runs.pop(engine)
    clock = "CPU time" if args.cpu_time else "wall time"
    print(f"MLP {args.size}x{args.size} -> {HIDDEN} -> {CLASSES}, {args.images} images/epoch, batch {BATCH}, "
          f"{clock}, {args.rounds} alternated runs, min-median-max; threads {args.threads or 'default'} ('numpy' splits "
          f"its input layer's products between them, 'numpy-unsplit' leaves that to BLAS)")
    print(f"numpy BLAS: {runs['numpy'][0]['blas']}")
    if "torch" in runs:
        print(runs["torch"][0]["torch"])
    keys = (("epoch_s", "s/epoch", "{:.2f}"), ("predict_b1_per_s", "img/s b1", "{:.0f}"),
            ("predict_b64_per_s", "img/s b64", "{:.0f}"), ("peak_rss_mb", "peak MB", "{:.0f}"))
    print(f"{'engine':<14}" + "".join(f"{title:>18}" for _, title, _ in keys))
    for name, rs in runs.items():
        print(f"{name:<14}" + "".join(f" {spread([r[k] for r in rs], fmt):>17}" for k, _, fmt in keys))
    for engine in [e for e in runs if e != "torch"] if "torch" in runs else []:
        pairs = list(zip(runs[engine], runs["torch"]))
        print(f"{engine}/torch time per epoch: {spread([a['epoch_s'] / b['epoch_s'] for a, b in pairs])} "
              f"(below 1: numpy is faster)")
        print(f"{engine}/torch prediction rate at batch {BATCH}: "
              f"{spread([a['predict_b64_per_s'] / b['predict_b64_per_s'] for a, b in pairs])} (above 1: numpy is faster)")
    if "numpy-unsplit" in runs:  # the split's own effect, round by round
        pairs = list(zip(runs["numpy"], runs["numpy-unsplit"]))
        print(f"numpy/numpy-unsplit time per epoch: {spread([a['epoch_s'] / b['epoch_s'] for a, b in pairs])}, "
              f"prediction rate at batch {BATCH}: {spread([a['predict_b64_per_s'] / b['predict_b64_per_s'] for a, b in pairs])}")


if __name__ == "__main__":
    main()
