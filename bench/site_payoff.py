"""What a new site's labels buy: fine-tune the shipped model on k labelled scans of the 4-class set.

    python bench/site_payoff.py --model models/versions/<v>/model.npz --out /tmp/payoff \
        [--k 0 50 100 200 500] [--select random uncertain] [--alone /tmp/loso/4class-base/model.npz]
    python bench/site_payoff.py --plot /tmp/payoff*/results.json --png docs/site-payoff.png
One process per k (--k 50 --select random --out /tmp/payoff-r50, ...) runs them side by side.

The 4-class set plays the new site. Its training part (less every scan nearly duplicating one
the shipped model trained or was validated on) is the pool a person labels from; its test part,
group-disjoint from the pool, is where each model is judged. Each fine-tune is what `tumord
train` does with k site scans: start from the model, the binary training scans plus the k site
scans, the site drawn at train.site.share of each (short: finetune_draws) epoch, class-balanced;
20% of the k scans (by
near-duplicate group) held out to choose the threshold; train.finetune_epochs at
train.finetune_lr. Scans are chosen at random, or least certain first (the shipped model's
probability nearest 0.5), one run per k.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tumord.model import checkpoint  # noqa: E402
from tumord.config import load_config  # noqa: E402
from tumord.data.split import group_split  # noqa: E402
from tumord.nn.losses import softmax  # noqa: E402
from tumord.training.calibration import fit_temperature  # noqa: E402
from tumord.training.cross_source import load_loso, scores  # noqa: E402
from tumord.training.site import choose_threshold, finetune_draws, fold_threshold, sampling_weights  # noqa: E402
from tumord.model.predict import predict_logits  # noqa: E402
from tumord.training.trainer import fit  # noqa: E402

DATASETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"


def _seen_and_train(model_file: Path, loso) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train+val, train, val) indices of the model's own binary split, from its report.json."""
    report = json.loads((model_file.parent / "report.json").read_text())
    root = Path(report["summary"]["data_root"]).resolve()
    rel = {str(p.resolve().relative_to(root)): i for i, p in enumerate(loso.data.files) if root in p.resolve().parents}
    tr = np.array([rel[f] for f in report["split"]["train"]])
    va = np.array([rel[f] for f in report["split"]["val"]])
    return np.concatenate([tr, va]), tr, va


def choose(pool: np.ndarray, k: int, how: str, p_tumor: np.ndarray, rng) -> np.ndarray:
    if how == "random":
        return rng.choice(pool, k, replace=False)
    return pool[np.argsort(np.abs(p_tumor - 0.5), kind="stable")[:k]]  # least certain first


def finetune(model_file: Path, loso, base_train, base_val, labelled, cfg) -> tuple[dict, float, dict]:
    t = cfg["train"]
    model = checkpoint.load(model_file)
    net, d = model.net, loso.data
    split = group_split(d.labels[labelled], d.groups[labelled], 0.2, 0.0, t["split_seed"])
    site_tr, site_va = labelled[split["train"]], labelled[split["val"]]
    train_idx = np.concatenate([base_train, site_tr])
    weights = sampling_weights(d.labels[train_idx], np.isin(train_idx, site_tr), t["site"]["share"])
    val_idx = np.concatenate([base_val, site_va])
    ft = {**t, "epochs": t["finetune_epochs"], "lr": t["finetune_lr"], "patience": t["finetune_epochs"]}
    start = time.monotonic()
    draws = finetune_draws(len(site_tr), t["site"]["share"], len(train_idx), t["batch_size"])
    fit(net, d.images, d.labels, train_idx, val_idx, ft, np.random.default_rng(t["seed"]), weights=weights,
        draws=draws)
    seconds = time.monotonic() - start
    temperature = fit_temperature(predict_logits(net, d.images, val_idx), d.labels[val_idx])
    p_val = softmax(predict_logits(net, d.images, site_va) / temperature)[:, 1]
    threshold = choose_threshold(p_val, d.labels[site_va] == 1)
    fold_threshold(net, threshold, temperature, 0, 1)
    return net, temperature, {"threshold": threshold, "draws_per_epoch": draws, "fine_tune_seconds": round(seconds, 1),
                              "site_train": int(len(site_tr)), "site_val": int(len(site_va))}


def run(args) -> dict:
    cfg = load_config(args.config)
    model = checkpoint.load(args.model)
    loso = load_loso(args.datasets, model.preprocess, cfg["paths"]["cache"])
    d = loso.data
    seen, base_train, base_val = _seen_and_train(args.model, loso)
    pool, test = loso.unseen_part("4class", "train", seen), loso.unseen_part("4class", "test", seen)
    p_pool = model.predict(d.images[pool])[:, 1] if "uncertain" in args.select else None
    rows = []
    if 0 in args.k:
        rows.append({"k": 0, "select": "none", **scores(model.logits(d.images[test]), d.labels[test], model.temperature)})
    if args.alone:
        alone = checkpoint.load(args.alone)
        rows.append({"k": None, "select": "trained on the 4-class set alone",
                     **scores(alone.logits(d.images[test]), d.labels[test], alone.temperature)})
    for how in args.select:
        for k in [k for k in args.k if k > 0]:
            labelled = choose(pool, k, how, p_pool, np.random.default_rng(k))
            net, temperature, info = finetune(args.model, loso, base_train, base_val, labelled, cfg)
            row = {"k": k, "select": how, **info,
                   "labelled_normals": int((d.labels[labelled] == 0).sum()),
                   **scores(predict_logits(net, d.images, test), d.labels[test], temperature)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "results.json").write_text(json.dumps({"pool": int(len(pool)), "test": int(len(test)),
                                                               "rows": rows, "command": " ".join(sys.argv)}, indent=1))
    return {"pool": int(len(pool)), "test": int(len(test)), "rows": rows, "command": " ".join(sys.argv)}


def plot(results: list[Path], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [json.loads(p.read_text()) for p in results]  # one file per process; the same pool and test
    r = {**parts[0], "rows": [row for p in parts for row in p["rows"]]}
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    base = next(row for row in r["rows"] if row["k"] == 0)
    alone = next((row for row in r["rows"] if row["k"] is None), None)
    for ax, key in zip(axes, ("accuracy", "balanced_accuracy", "auc")):
        for how, style in (("random", "o-"), ("uncertain", "s--")):
            rows = [base] + sorted((row for row in r["rows"] if row["select"] == how), key=lambda row: row["k"])
            if len(rows) > 1:
                ax.plot([row["k"] for row in rows], [row[key] for row in rows], style, label=f"{how} scans")
        if alone:
            ax.axhline(alone[key], color="grey", ls=":", label="trained on the site's source alone")
        ax.set(xlabel="labelled site scans k", ylabel=key.replace("_", " "), title=key.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(f"Fine-tuning the shipped model on k scans of the 4-class set; test: {r['test']} scans of it")
    fig.tight_layout()
    fig.savefig(png, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--k", type=int, nargs="+", default=[0, 50, 100, 200, 500])
    ap.add_argument("--select", nargs="+", choices=["random", "uncertain"], default=["random", "uncertain"])
    ap.add_argument("--alone", type=Path, default=None, help="a model trained on the 4-class set alone")
    ap.add_argument("--datasets", type=Path, default=DATASETS)
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--plot", type=Path, nargs="+", default=None, help="results.json files to plot (with --png)")
    ap.add_argument("--png", type=Path, default=None)
    args = ap.parse_args()
    if args.plot:
        plot(args.plot, args.png)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    result = run(args)
    (args.out / "results.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
