"""Times the numpy CNN against the same network in PyTorch on the CPU.

Per convolution of cnn_spec (forward and backward) and for a whole training step
(forward + loss + backward + AdamW), at 128x128 input. PyTorch gets as many threads as
numpy's BLAS. Install the extra packages with `pip install -r bench/requirements.txt`.

    python bench/bench_conv.py [--batch 32] [--repeats 5] [--threads N] [--cpu-time]

On a shared machine, `--threads 1 --cpu-time` gives the steadiest comparison.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tumord.nn.conv import Conv2D, cnn_spec  # noqa: E402
from tumord.nn.losses import softmax_cross_entropy  # noqa: E402
from tumord.nn.network import Network  # noqa: E402
from tumord.nn.optim import AdamW  # noqa: E402


CLOCK = time.perf_counter


def best_ms(fn, repeats: int) -> float:
    """Best of `repeats` runs after a warm-up (buffer allocation, BLAS/oneDNN kernel selection):
    on a shared machine the fastest run is the one least disturbed by other processes."""
    fn()
    times = []
    for _ in range(repeats):
        t = CLOCK()
        fn()
        times.append(CLOCK() - t)
    return min(times) * 1e3


def blas_threads() -> int:
    """Prints which BLAS (and which of its CPU kernels) numpy runs; returns its thread count."""
    from threadpoolctl import threadpool_info

    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    for i in blas:
        print(f"numpy BLAS: {i['internal_api']} {i.get('version')} kernel={i.get('architecture')} "
              f"threads={i['num_threads']} ({Path(i['filepath']).name})")
    return blas[0]["num_threads"] if blas else 1


def torch_network(net: Network, torch):
    """The same architecture and weights as torch modules."""
    nn, mods = torch.nn, []
    for layer in net.layers:
        cfg = layer.config()
        kind = cfg["type"]
        if kind == "conv2d":
            k = layer.params["kernel"]
            m = nn.Conv2d(k.shape[1], k.shape[0], k.shape[2:], padding="same", bias="b" in layer.params)
            m.weight.data = torch.from_numpy(k.copy())
        elif kind == "batchnorm":
            m = nn.BatchNorm2d(layer.features, eps=layer.eps, momentum=layer.momentum)
        elif kind == "relu":
            m = nn.ReLU()
        elif kind == "maxpool":
            m = nn.MaxPool2d(layer.size)
        elif kind == "globalavgpool":
            m = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        elif kind == "dropout":
            m = nn.Dropout(layer.rate)
        elif kind == "dense":
            w = layer.params["W"]
            m = nn.Linear(*w.shape)
            m.weight.data = torch.from_numpy(w.T.copy())
        else:
            raise ValueError(f"no torch equivalent for {kind}")
        mods.append(m)
    return nn.Sequential(*mods)


def time_numpy(net: Network, x, labels, repeats: int):
    """Per convolution (forward, backward) on its real input, then a whole training step."""
    rng = np.random.default_rng(1)
    per_conv, h = {}, x
    for i, layer in enumerate(net.layers):
        if isinstance(layer, Conv2D):
            g = rng.standard_normal((x.shape[0], *layer.output_shape(h.shape[1:]))).astype(np.float32)
            fwd = best_ms(lambda: layer.forward(h, training=True), repeats)
            both = best_ms(lambda: (layer.forward(h, training=True), layer.backward(g, i > 0)), repeats)
            per_conv[i] = (f"{i} conv {layer.in_channels}->{layer.filters} {h.shape[2]}x{h.shape[3]}", fwd, both - fwd, h, g)
        h = layer.forward(h, training=True)
    opt = AdamW(1e-3, weight_decay=0.01)

    def step():
        _, grad = softmax_cross_entropy(net.forward(x, training=True), labels)
        net.backward(grad)
        opt.step(net.named_parameters())

    return per_conv, best_ms(step, repeats)


def time_torch(tnet, per_conv, x, labels, repeats: int, torch):
    times = {}
    for i, (_, _, _, h, g) in per_conv.items():
        conv, tx, tg = tnet[i], torch.from_numpy(h.copy()).requires_grad_(i > 0), torch.from_numpy(g)

        def fwd_bwd():
            conv.zero_grad(set_to_none=True)
            conv(tx).backward(tg)

        fwd = best_ms(lambda: conv(tx), repeats)  # with autograd on, as numpy keeps its columns
        times[i] = (fwd, best_ms(fwd_bwd, repeats) - fwd)
    opt = torch.optim.AdamW(tnet.parameters(), lr=1e-3, weight_decay=0.01)
    tx, ty, loss_fn = torch.from_numpy(x), torch.from_numpy(labels), torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(tnet(tx), ty).backward()
        opt.step()

    return times, best_ms(step, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, help="BLAS and PyTorch threads (default: numpy's BLAS default)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with the process's CPU time: steadier on a busy machine, valid with --threads 1 only")
    args = ap.parse_args()
    if args.cpu_time:
        if args.threads != 1:
            ap.error("--cpu-time needs --threads 1 (idle worker threads spin and count as CPU time)")
        global CLOCK
        CLOCK = time.process_time

    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads, user_api="blas")  # None keeps the default
    threads = blas_threads()
    rng = np.random.default_rng(0)
    n, s = args.batch, args.size
    net = Network((1, s, s), cnn_spec(), rng)
    x = rng.standard_normal((n, 1, s, s)).astype(np.float32)
    labels = rng.integers(0, 2, n)
    tnet_weights = {k: v.copy() for k, v in net.state_dict().items()}  # before training steps change them
    # numpy first, torch after: their idle worker threads spin for a while and would slow each other
    per_conv, step_np = time_numpy(net, x, labels, args.repeats)
    time.sleep(1)

    import torch

    torch.set_num_threads(threads)
    print(f"torch {torch.__version__} threads={torch.get_num_threads()} mkldnn={torch.backends.mkldnn.is_available()}")
    net.load_state_dict(tnet_weights)
    tnet = torch_network(net, torch)
    per_conv_pt, step_pt = time_torch(tnet, per_conv, x, labels, args.repeats, torch)

    clock = "CPU time" if args.cpu_time else "wall time"
    print(f"\nper convolution, batch {n}, {s}x{s} input, best of {args.repeats}, {clock} (ms); ratio = numpy/pytorch")
    print(f"{'layer':<24}{'np fwd':>8}{'np bwd':>8}{'pt fwd':>8}{'pt bwd':>8}{'ratio':>7}")
    tot_np = tot_pt = 0.0
    for i, (name, f_np, b_np, _, _) in per_conv.items():
        f_pt, b_pt = per_conv_pt[i]
        tot_np, tot_pt = tot_np + f_np + b_np, tot_pt + f_pt + b_pt
        print(f"{name:<24}{f_np:8.1f}{b_np:8.1f}{f_pt:8.1f}{b_pt:8.1f}{(f_np + b_np) / (f_pt + b_pt):7.2f}")
    print(f"{'all convolutions':<24}{tot_np:16.1f}{tot_pt:16.1f}{tot_np / tot_pt:7.2f}")
    print(f"\ntraining step (forward + loss + backward + AdamW), batch {n}")
    print(f"numpy {step_np:.0f} ms   pytorch {step_pt:.0f} ms   ratio {step_np / step_pt:.2f}")
    steps = -(-2700 // n)
    print(f"an epoch of 2,700 images: numpy ~{steps * step_np / 1e3:.0f} s, pytorch ~{steps * step_pt / 1e3:.0f} s")


if __name__ == "__main__":
    main()
