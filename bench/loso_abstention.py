"""Abstention in leave-one-source-out: a model trained on one source, judged on the other.

    python bench/cross_source.py train --source 4class --recipe base --epochs 3 --out RUN
    python bench/loso_abstention.py --run RUN [--out FILE.json] [--plot FILE.png]

RUN is a `bench/cross_source.py train` folder (model.npz, result.json). The abstention reference
is fitted as `tumord train` fits it (training part's pooled features, threshold on the source's
validation part), from the same joint split; then the other source's test part, less every scan
nearly duplicating one the model trained or was validated on, is scored against the model's own
test part:
- AUROC of each score (k-NN, class Mahalanobis, Mahalanobis of the block before, combined,
  blocks, 1 - max softmax: bench/bench_abstention.py) telling the other source from the same source;
- accuracy on the accepted scans against the share accepted (risk-coverage), and what the
  service's threshold (95% of the source's validation scans accepted) does, for each method.
A run trained with --hold-out-shared gets its reference from the training part it trained on.
Needs ../shared/datasets.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_abstention import COVERAGES, DECIDED, SCORES, accuracy_at, auroc, scores as score_all  # noqa: E402
from cross_source import hold_out_shared  # noqa: E402

from tumord.abstain.fit import fit_reference  # noqa: E402
from tumord.config import load_config  # noqa: E402
from tumord.model import checkpoint  # noqa: E402
from tumord.training.cross_source import load_loso, scores  # noqa: E402

DATASETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"


def _part(model, reference, thresholds: dict, inside: dict, images: np.ndarray, labels: np.ndarray) -> tuple[dict, dict]:
    """One part of the other source against the model's own test part."""
    outside = score_all(model, images, reference)
    correct = outside["logits"].argmax(axis=1) == labels
    out = {"n": int(len(labels)), "figures": scores(outside["logits"], labels, model.temperature),
           "auroc_other_vs_same": {k: round(auroc(inside[k], outside[k]), 4) for k in SCORES},
           "accuracy_overall": round(float(correct.mean()), 4)}
    for method, threshold in thresholds.items():
        accepted = outside[method] <= threshold
        out[f"{method}_abstained_at_threshold"] = round(float(1 - accepted.mean()), 4)
        out[f"{method}_accuracy_accepted"] = round(float(correct[accepted].mean()), 4) if accepted.any() else None
    out["risk_coverage"] = {k: {f"{c:.1f}": round(accuracy_at(outside[k], correct, c), 4) for c in COVERAGES}
                            for k in SCORES}
    out["gain_at_0.7"] = {k: round(out["risk_coverage"][k]["0.7"] - out["accuracy_overall"], 4) for k in SCORES}
    return out, {"curves": {k: outside[k] for k in SCORES}, "correct": correct}


def measure(run: Path, datasets: Path, cache) -> tuple[dict, dict]:
    """Validation part of the other source (where a score or threshold would be chosen) and its test part."""
    result = json.loads((run / "result.json").read_text())
    source = result["source"]
    model = checkpoint.load(run / "model.npz")
    loso = load_loso(datasets, model.preprocess, cache)
    d, other = loso.data, loso.other(source)
    tr, va = loso.part(source, "train"), loso.part(source, "val")
    held = model.meta.get("training", {}).get("hold_out_shared")
    if held:  # as bench/cross_source.py trained it: without a share of the groups both sources hold
        tr, _ = hold_out_shared(loso, tr, held)
    reference = fit_reference(model.net, d.images, d.labels, tr, d.images, va)
    thresholds = {m: reference.threshold(0.95, m) for m in DECIDED}
    own = np.sort(loso.part(source, "test"))
    inside = score_all(model, np.asarray(d.images[own]), reference)
    out = {"run": result["run"], "trained_on": source, "judged_on": other, "same_source_test": int(len(own)),
           **{f"threshold_{m}_95": round(float(t), 4) for m, t in thresholds.items()},
           **{f"same_source_abstained_{m}": round(float((inside[m] > t).mean()), 4) for m, t in thresholds.items()}}
    raw = {}
    for part, idx in loso.judged_parts(other, tr, va).items():  # as bench/cross_source.py judges recipes
        idx = np.sort(idx)
        out[f"{other} {part}"], raw[part] = _part(model, reference, thresholds, inside,
                                                  np.asarray(d.images[idx]), d.labels[idx])
    return out, raw["test"]


def plot(path: Path, title: str, curves: dict, correct: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    cover = np.linspace(0.1, 1.0, 91)
    for name, s in curves.items():
        ax.plot(cover, [accuracy_at(s, correct, c) for c in cover], label=name)
    ax.axvline(0.7, color="gray", lw=0.5)
    ax.set_xlabel("share of scans accepted (coverage)")
    ax.set_ylabel("accuracy on accepted scans")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a bench/cross_source.py train folder")
    ap.add_argument("--datasets", type=Path, default=DATASETS)
    ap.add_argument("--config", type=Path, default=None, help="for paths.cache")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    ap.add_argument("--plot", type=Path, default=None, help="risk-coverage plot (PNG)")
    args = ap.parse_args()
    started = time.monotonic()
    out, raw = measure(args.run, args.datasets, load_config(args.config)["paths"]["cache"])
    out["seconds"] = round(time.monotonic() - started, 1)
    out["command"] = " ".join(sys.argv)
    if args.plot:
        plot(args.plot, f"trained on {out['trained_on']}, judged on {out['judged_on']}", raw["curves"], raw["correct"])
    text = json.dumps(out, indent=1)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
