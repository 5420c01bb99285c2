"""Times the numpy CNN against the same network in PyTorch on the CPU.

Per convolution of cnn_spec (forward and backward) and for a whole training step
(forward + loss + backward + AdamW), at 128x128 input. PyTorch gets as many threads as
numpy's BLAS. Each engine runs in its own process, alternated (numpy, PyTorch, numpy, ...), and
every ratio is printed as min-median-max over the rounds, with the BLAS kernel that ran.
Install the extra packages with `pip install -r bench/requirements.txt`.

    python bench/bench_conv.py [--batch 32] [--repeats 5] [--rounds 3] [--threads N] [--cpu-time] [--unsplit]

On a shared machine, `--threads 1 --cpu-time` gives the steadiest comparison. With more than one
thread the engine splits each convolution's products by images (tumord/nn/parallel.py); --unsplit
adds, in the same alternation, the engine with that split off (BLAS's own threads, as before).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import blas_report, run_child, spread, torch_report  # noqa: E402
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
    from threadpoolctl import threadpool_info

    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
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


def conv_inputs(net: Network, x) -> dict:
    """Per convolution: its name, its real input in a training forward pass and an output gradient."""
    rng = np.random.default_rng(1)
    convs, h = {}, x
    for i, layer in enumerate(net.layers):
        if isinstance(layer, Conv2D):
            g = rng.standard_normal((x.shape[0], *layer.output_shape(h.shape[1:]))).astype(np.float32)
            convs[i] = (f"{i} conv {layer.in_channels}->{layer.filters} {h.shape[2]}x{h.shape[3]}", h.copy(), g)
        h = layer.forward(h, training=True)
    return convs


def time_numpy(net: Network, convs, x, labels, repeats: int):
    """Per convolution (forward, backward) on its real input, then a whole training step."""
    per_conv = {}
    for i, (_, h, g) in convs.items():
        layer = net.layers[i]
        fwd = best_ms(lambda: layer.forward(h, training=True), repeats)
        both = best_ms(lambda: (layer.forward(h, training=True), layer.backward(g, i > 0)), repeats)
        per_conv[i] = (fwd, both - fwd)
    opt = AdamW(1e-3, weight_decay=0.01)

    def step():
        _, grad = softmax_cross_entropy(net.forward(x, training=True), labels)
        net.backward(grad)
        opt.step(net.named_parameters())

    return per_conv, best_ms(step, repeats)


def time_torch(tnet, convs, x, labels, repeats: int, torch):
    times = {}
    for i, (_, h, g) in convs.items():
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


def child(args) -> dict:
    """One engine's timings, in this process alone (its idle worker threads spin for a while and
    would slow the other engine's)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads, user_api="blas")  # None keeps the default
    threads = blas_threads()
    rng = np.random.default_rng(0)
    n, s = args.batch, args.size
    net = Network((1, s, s), cnn_spec(), rng)
    x = rng.standard_normal((n, 1, s, s)).astype(np.float32)
    labels = rng.integers(0, 2, n)
    weights = {k: v.copy() for k, v in net.state_dict().items()}  # before training steps change them
    convs = conv_inputs(net, x)
    net.load_state_dict(weights)  # the forward pass moved the batch-norm statistics
    out = {"names": {i: v[0] for i, v in convs.items()}, "blas": blas_report()}
    if args.child.startswith("numpy"):
        conv, step = time_numpy(net, convs, x, labels, args.repeats)
        return {**out, "conv": conv, "step": step}
    import torch

    torch.set_num_threads(threads)
    conv, step = time_torch(torch_network(net, torch), convs, x, labels, args.repeats, torch)
    return {**out, "conv": conv, "step": step, "torch": torch_report(torch)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3, help="alternated numpy/PyTorch runs, one process each")
    ap.add_argument("--threads", type=int, help="BLAS and PyTorch threads (default: numpy's BLAS default)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with the process's CPU time: steadier on a busy machine, valid with --threads 1 only")
    ap.add_argument("--unsplit", action="store_true",
                    help="also time the numpy engine without its split by images (alternated with the others)")
    ap.add_argument("--child", choices=["numpy", "numpy-unsplit", "torch"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cpu_time:
        if args.threads != 1:
            ap.error("--cpu-time needs --threads 1 (idle worker threads spin and count as CPU time)")
        global CLOCK
        CLOCK = time.process_time
    if args.child:
        try:
            from tumord.nn import parallel
        except ImportError:  # an engine from before tumord.nn.parallel (for before/after runs)
            parallel = None
        if parallel is not None and args.cpu_time:
            parallel.THREADS = 1  # CPU time counts every thread's: one thread, as BLAS
        if parallel is not None and args.child == "numpy-unsplit":
            parallel.SPLIT = False
        print(json.dumps(child(args)))
        return
    opts = [f"--{k}={v}" for k, v in (("batch", args.batch), ("size", args.size), ("repeats", args.repeats),
                                      ("threads", args.threads)) if v is not None] + ["--cpu-time"] * args.cpu_time
    runs = {"numpy": [], **({"numpy-unsplit": []} if args.unsplit else {}), "torch": []}
    for _ in range(args.rounds):
        for engine in runs:
            runs[engine].append(run_child(__file__, engine, *opts))
    pt_runs = runs["torch"]
    print(f"numpy BLAS: {runs['numpy'][0]['blas']}\n{pt_runs[0]['torch']}")
    clock = "CPU time" if args.cpu_time else "wall time"
    print(f"threads {args.threads or 'default'}, split by images: 'numpy' yes (when threads > 1), 'numpy-unsplit' no")
    med = lambda xs: statistics.median(xs)  # noqa: E731
    for engine in [e for e in runs if e != "torch"]:
        np_runs = runs[engine]
        print(f"\n{engine}: per convolution, batch {args.batch}, {args.size}x{args.size} input, best of {args.repeats} "
              f"per run, {clock}, {args.rounds} alternated runs; ms as median; ratio numpy/pytorch as min-median-max")
        print(f"{'layer':<24}{'np fwd':>8}{'np bwd':>8}{'pt fwd':>8}{'pt bwd':>8}  ratio")
        for i, name in np_runs[0]["names"].items():
            f_np, b_np, f_pt, b_pt = (med([r["conv"][i][k] for r in rs]) for rs, k in
                                      ((np_runs, 0), (np_runs, 1), (pt_runs, 0), (pt_runs, 1)))
            ratios = [sum(a["conv"][i]) / sum(b["conv"][i]) for a, b in zip(np_runs, pt_runs)]
            print(f"{name:<24}{f_np:8.1f}{b_np:8.1f}{f_pt:8.1f}{b_pt:8.1f}  {spread(ratios)}")
        total = [(sum(map(sum, a["conv"].values())), sum(map(sum, b["conv"].values()))) for a, b in zip(np_runs, pt_runs)]
        print(f"{'all convolutions':<24}{spread([a for a, _ in total], '{:.0f}'):>16}"
              f"{spread([b for _, b in total], '{:.0f}'):>16}  {spread([a / b for a, b in total])}")
        print(f"training step (forward + loss + backward + AdamW), batch {args.batch}, ms min-median-max")
        steps = [(a["step"], b["step"]) for a, b in zip(np_runs, pt_runs)]
        print(f"{engine} {spread([a for a, _ in steps], '{:.0f}')}   pytorch {spread([b for _, b in steps], '{:.0f}')}   "
              f"ratio {spread([a / b for a, b in steps])}")
    if args.unsplit:  # the split's own effect, round by round
        pairs = list(zip(runs["numpy"], runs["numpy-unsplit"]))
        convs = [sum(map(sum, a["conv"].values())) / sum(map(sum, b["conv"].values())) for a, b in pairs]
        print(f"\nnumpy / numpy-unsplit: all convolutions {spread(convs)}, "
              f"training step {spread([a['step'] / b['step'] for a, b in pairs])} (below 1: the split is faster)")

if __name__ == "__main__":
    main()
