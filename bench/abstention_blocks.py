"""Exploration: abstention scores from every block's pooled statistics, in leave-one-source-out.

    python bench/abstention_blocks.py --run R/4class-held [--part val|test] [--config C]

RUN is a `bench/cross_source.py train` folder. For each of the CNN's blocks (the output after
its ReLU), the per-channel mean and standard deviation over the image are the scan's features;
each gets a class Mahalanobis distance (tied covariance, shrunk by tumord's own
`feature_distance.shrunk_precision`) and a k-nearest-neighbour distance, fitted on the run's
training part and turned into surprises on its own validation part; then the distance to the
predicted class's mean, the relative Mahalanobis distance (Ren et al. 2021) and means of surprises. Each score's AUROC (the
other source against the model's own test part) and the accuracy gain at 70% coverage on the
other source's --part are printed. Candidates are compared on --part val; test is looked at once.
The best on validation (Mahalanobis on block 4's means, Mahalanobis and k-NN on block 5's) is
tumord's `blocks` score since 2026-12-03; docs/abstention.md says what else it found.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_abstention import accuracy_at, auroc  # noqa: E402
from cross_source import hold_out_shared  # noqa: E402

from tumord.config import load_config  # noqa: E402
from tumord.model import checkpoint  # noqa: E402
from tumord.model.predict import to_input  # noqa: E402
from tumord.nn import feature_distance as fd  # noqa: E402
from tumord.nn.inference import infer  # noqa: E402
from tumord.nn.losses import softmax  # noqa: E402
from tumord.training.cross_source import load_loso  # noqa: E402

DATASETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"
JUDGED = ("own_test", "other")


def block_statistics(net, images, idx: np.ndarray) -> dict[str, np.ndarray]:
    """b<j>m / b<j>s: per-channel mean / std of block j's output; logits."""
    cuts = [i + 1 for i, s in enumerate(net.spec) if s.get("type") == "relu"]
    out: dict[str, list] = {"logits": []}
    for s in range(0, len(idx), 64):
        x, start = to_input(np.asarray(images[idx[s:s + 64]]), net.input_shape), 0
        for j, c in enumerate(cuts):
            x, start = infer(net.layers[start:c], x), c
            out.setdefault(f"b{j}m", []).append(x.mean(axis=(2, 3)))
            out.setdefault(f"b{j}s", []).append(x.std(axis=(2, 3)))
        out["logits"].append(infer(net.layers[start:], x))
    return {k: np.concatenate(v) for k, v in out.items()}


def tied_gaussian(f: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Class means and shared precision (as tumord's reference fits them); the class-agnostic ones."""
    means, precision = fd.class_gaussian(f, y, len(np.unique(y)))
    f = f.astype(np.float64)
    mean = f.mean(0)
    return means, precision, mean.astype(np.float32), fd.shrunk_precision(f - mean).astype(np.float32)


def squared(f, m, p):
    return np.einsum("nd,de,ne->n", f - m, p, f - m)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--part", choices=["val", "test"], default="val")
    ap.add_argument("--datasets", type=Path, default=DATASETS)
    ap.add_argument("--config", type=Path, default=None, help="for paths.cache")
    args = ap.parse_args()
    model = checkpoint.load(args.run / "model.npz")
    source = json.loads((args.run / "result.json").read_text())["source"]
    loso = load_loso(args.datasets, model.preprocess, load_config(args.config)["paths"]["cache"])
    d, other = loso.data, loso.other(source)
    tr, va = loso.part(source, "train"), loso.part(source, "val")
    if model.meta.get("training", {}).get("hold_out_shared"):
        tr, _ = hold_out_shared(loso, tr, model.meta["training"]["hold_out_shared"])
    parts = {"train": tr, "val": va, "own_test": loso.part(source, "test"),
             "other": loso.judged_parts(other, tr, va)[args.part]}
    parts = {n: np.sort(i) for n, i in parts.items()}
    stats = {n: block_statistics(model.net, d.images, i) for n, i in parts.items()}
    y = d.labels[parts["train"]]
    probs = {n: softmax(stats[n]["logits"] / model.temperature) for n in JUDGED}
    correct = probs["other"].argmax(1) == d.labels[parts["other"]]
    print(f"{args.run.name}: other source's {args.part} part, {len(correct)} scans, accuracy {correct.mean():.3f}")
    scores = {"msp": {n: 1 - probs[n].max(1) for n in JUDGED}}

    def add(name, distance):  # distance(part) -> per-scan distances; stored as surprises
        ref = np.sort(distance("val"))
        scores[name] = {n: fd.surprise(ref, distance(n)) for n in JUDGED}

    for key in [k for k in stats["train"] if k != "logits"]:
        means, prec, mean0, prec0 = tied_gaussian(stats["train"][key], y)
        bank = fd.normalize(stats["train"][key].astype(np.float32))
        f = {n: stats[n][key].astype(np.float32) for n in ("val", *JUDGED)}
        d2 = {n: np.stack([squared(f[n], m, prec) for m in means], 1) for n in f}
        add(f"mah_{key}", lambda n: np.sqrt(np.maximum(d2[n].min(1), 0)))
        add(f"knn_{key}", lambda n: fd.knn_distance(fd.normalize(f[n]), bank, 1))
        add(f"mahpred_{key}", lambda n: d2[n][np.arange(len(f[n])), stats[n]["logits"].argmax(1)])
        add(f"mahrel_{key}", lambda n: (d2[n] - squared(f[n], mean0, prec0)[:, None]).min(1))
    last = f"b{sum(s.get('type') == 'relu' for s in model.net.spec) - 1}m"
    combos = {"mah+knn (tumord's combined)": [f"mah_{last}", f"knn_{last}"],
              "mah every block (means)": [k for k in scores if k.startswith("mah_") and k.endswith("m")],
              "mah every block (stds)": [k for k in scores if k.startswith("mah_") and k.endswith("s")],
              "mah b3 + mah b4 + knn b4": ["mah_b3m", f"mah_{last}", f"knn_{last}"],
              "mahpred b3 + mahpred b4 + knn b4": ["mahpred_b3m", f"mahpred_{last}", f"knn_{last}"]}
    for name, keys in combos.items():
        scores["mean " + name] = {n: np.mean([scores[k][n] for k in keys], 0) for n in JUDGED}
    for name, s in scores.items():
        gain = accuracy_at(s["other"], correct, 0.7) - correct.mean()
        print(f"{name:40s} AUROC {auroc(s['own_test'], s['other']):.3f}  gain at 70% {100 * gain:+.1f}")


if __name__ == "__main__":
    main()
