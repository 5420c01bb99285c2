"""Measures abstention on the shipped model: far-out inputs, the other source, risk against coverage.

    pip install -r bench/requirements.txt          # scikit-image, for its bundled photographs
    python bench/bench_abstention.py [--model FILE] [--datasets ../shared/datasets] [--plot FILE.png]

Scores compared: k-NN distance and class Mahalanobis distance on the pooled features, class
Mahalanobis distance on the channel means of the block before (all three stored in the model
file), combined (the mean of the first two's surprises against the validation scans), blocks (of
all three's), and 1 - the maximum softmax probability (MSP), the usual baseline.
- Far-out AUROC: each kind of generated input (bench/farout.py) against the held-out test split
  of the binary set. "decision_<method>" is what the service does with abstain.method <method>:
  input checks, then the score's threshold.
- Other source: the 4-class set (train and test folders, glioma/meningioma/pituitary = tumor,
  notumor = normal) less every scan that nearly duplicates a training scan of the model (the
  project's near-duplicate test, tumord/data/dedup.py). AUROC against the binary test split,
  and accuracy on the accepted scans against the share accepted (risk-coverage).
- Cost: ms per scan of prediction with and without the score (alternated runs, one BLAS thread).
Prints one JSON object (the figures docs/abstention.md quotes) and writes the plot.
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

import farout  # noqa: E402

from tumord.abstain.checks import InputChecks  # noqa: E402
from tumord.data.cache import load_images  # noqa: E402
from tumord.data.dedup import duplicates_any_of  # noqa: E402
from tumord.data.images import IMAGE_SUFFIXES, resize, to_gray_uint8  # noqa: E402
from tumord.model import checkpoint  # noqa: E402
from tumord.model.features import features_and_logits  # noqa: E402
from tumord.model.registry import current_model_path  # noqa: E402
from tumord.nn.feature_distance import METHODS, PREVIOUS, SURPRISES  # noqa: E402
from tumord.nn.losses import softmax  # noqa: E402
from tumord.training.metrics import roc_auc  # noqa: E402

COVERAGES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
SCORES = (*METHODS, PREVIOUS, *SURPRISES, "msp")
DECIDED = (*METHODS, *SURPRISES)  # the service's methods, with their thresholds
REFUSED = 1e6  # score of a scan the input checks refuse: above any distance


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """How well a score (larger: more out-of-distribution) puts outside above inside."""
    return roc_auc(np.r_[inside, outside], np.r_[np.zeros(len(inside)), np.ones(len(outside))].astype(bool))


def scores(model, images: np.ndarray, reference=None) -> dict[str, np.ndarray]:
    """Each score per image (and the logits), against `reference` or the model file's own."""
    feats, logits = features_and_logits(model.net, images, 64)
    ref = reference if reference is not None else model.reference
    distances = {m: ref.score(feats, m) for m in (*METHODS, PREVIOUS)}
    return {**distances, **{m: ref.combine(distances, m) for m in SURPRISES},  # from the same distances
            "msp": 1 - softmax(logits / model.temperature).max(axis=1), "logits": logits}


def accuracy_at(score: np.ndarray, correct: np.ndarray, coverage: float) -> float:
    keep = np.argsort(score, kind="stable")[: int(round(coverage * len(score)))]
    return float(correct[keep].mean())


def far_out(model, test_images: np.ndarray, inside: dict, thresholds: dict[str, float]) -> dict:
    """`decision_<method>` is the service's with abstain.method <method> (input checks, then the
    score); `abstained_<method>`: the share it abstains on at its 95% threshold (`thresholds`)."""
    checks, rng = InputChecks(), np.random.default_rng(0)
    result, pooled = {}, {k: [] for k in (*SCORES, *(f"decision_{m}" for m in DECIDED))}
    for kind, raws in farout.all_kinds(rng, test_images).items():
        refused = np.array([bool(checks.reasons(r)) for r in raws])
        gray = np.stack([resize(to_gray_uint8(r), model.preprocess) for r in raws])
        s = scores(model, gray)
        s.update({f"decision_{m}": np.where(refused, REFUSED, s[m]) for m in DECIDED})
        result[kind] = {"n": len(raws), **{k: round(auroc(inside[k], s[k]), 4) for k in pooled},
                        "refused_by_checks": round(float(refused.mean()), 3),
                        **{f"abstained_{m}": round(float(((s[m] > t) | refused).mean()), 3)
                           for m, t in thresholds.items()}}
        for k in pooled:
            pooled[k].append(s[k])
    result["all"] = {"n": sum(r["n"] for r in result.values()),
                     **{k: round(auroc(inside[k], np.concatenate(v)), 4) for k, v in pooled.items()}}
    return result


def other_source(model, root: Path, train_thumbs: np.ndarray, inside: dict, threshold: float, cache) -> dict:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    images, thumbs = load_images(files, model.preprocess, cache)
    keep = ~duplicates_any_of(np.asarray(thumbs), train_thumbs, 0.95)
    labels = np.array([model.class_names.index("normal" if p.parent.name == "notumor" else "tumor") for p in files])
    s = scores(model, np.asarray(images)[keep])
    correct = s["logits"].argmax(axis=1) == labels[keep]
    accepted = s["knn"] <= threshold
    return {
        "files": len(files), "near_duplicates_removed": int((~keep).sum()), "n": int(keep.sum()),
        "accuracy": round(float(correct.mean()), 4),
        "auroc_vs_binary_test": {k: round(auroc(inside[k], s[k]), 4) for k in SCORES},
        "abstained_at_threshold": round(float(1 - accepted.mean()), 4),
        "accuracy_accepted": round(float(correct[accepted].mean()), 4),
        "accuracy_abstained": round(float(correct[~accepted].mean()), 4) if (~accepted).any() else None,
        "risk_coverage": {k: {f"{c:.1f}": round(accuracy_at(s[k], correct, c), 4) for c in COVERAGES}
                          for k in SCORES},
        "_curves": {k: s[k] for k in SCORES}, "_correct": correct,
    }


def cost(model, runs: int = 5) -> dict:
    """ms per scan of plain prediction and of prediction with the abstention score, alternated runs
    on 256 random scans with one BLAS thread: min/median/max."""
    from threadpoolctl import threadpool_limits

    from tumord.abstain.judge import judge

    images = np.random.default_rng(0).integers(0, 256, (256, *[model.preprocess.size] * 2), dtype=np.uint8)
    times: dict[str, list[float]] = {"predict": [], "predict_and_score": []}
    with threadpool_limits(1, user_api="blas"):
        for _ in range(runs):
            for name, fn in (("predict", model.predict), ("predict_and_score", lambda x: judge(model, x))):
                t = time.perf_counter()
                fn(images)
                times[name].append((time.perf_counter() - t) * 1e3 / len(images))
    return {k: [round(f(v), 2) for f in (min, np.median, max)] for k, v in times.items()}


def plot(path: Path, other: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    cover = np.linspace(0.1, 1.0, 91)
    for name, s in other["_curves"].items():
        ax.plot(cover, [accuracy_at(s, other["_correct"], c) for c in cover], label=name)
    ax.axvline(0.7, color="gray", lw=0.5)
    ax.set_xlabel("share of scans accepted (coverage)")
    ax.set_ylabel("accuracy on accepted scans")
    ax.set_title("4-class set (other source), shipped model")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="model file (default: the current model in models/)")
    ap.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    ap.add_argument("--cache", default=".cache/tumord")
    ap.add_argument("--plot", type=Path, default=Path("docs/abstention-risk-coverage.png"))
    args = ap.parse_args()
    started = time.monotonic()
    path = args.model or current_model_path("models")
    model = checkpoint.load(path)
    if model.reference is None or not model.reference.available("blocks"):
        sys.exit(f"{path}: no abstention reference, or one without the block before's statistics; "
                 "run `tumord add-reference` first")
    report = json.loads((path.parent / "report.json").read_text())
    split = report["split"]
    root = args.datasets / "brain-tumor"
    test_images, _ = load_images([root / f for f in split["test"]], model.preprocess, args.cache)
    _, train_thumbs = load_images([root / f for f in split["train"]], model.preprocess, args.cache)
    inside = scores(model, np.asarray(test_images))
    inside.update({f"decision_{m}": inside[m] for m in DECIDED})  # every test scan passes the input checks
    thresholds = {m: model.reference.threshold(0.95, m) for m in DECIDED}
    threshold = thresholds["knn"]
    far = far_out(model, np.asarray(test_images), inside, thresholds)
    if report["summary"].get("extra_training_data"):  # it trained on the 4-class set too: no other source left
        other_part = {"skipped": "the model trained on the 4-class set as well; for the other source, train on one "
                                 "source and run bench/loso_abstention.py"}
    else:
        other = other_source(model, args.datasets / "brain-tumor-4class", np.asarray(train_thumbs), inside,
                             threshold, args.cache)
        plot(args.plot, other)
        other_part = {k: v for k, v in other.items() if not k.startswith("_")}
    out = {"model": model.identity["version"], "threshold_knn_95": round(threshold, 4),
           **{f"binary_test_abstained_{m}": round(float((inside[m] > t).mean()), 4) for m, t in thresholds.items()},
           "far_out": far, "other_source": other_part,
           "ms_per_scan": cost(model), "seconds": round(time.monotonic() - started, 1)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
