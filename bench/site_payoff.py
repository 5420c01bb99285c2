"""What a new site's labels buy: fine-tune a model on k labelled scans of the other source.

    # base: trained on the 4-class set less half the groups it shares with the binary set;
    # alone: trained on the binary set, same schedule
    python bench/cross_source.py train --source 4class --epochs 4 --hold-out-shared 0.5 --out /tmp/site/4class-held-4ep
    python bench/cross_source.py train --source binary --epochs 4 --out /tmp/site/binary-base-4ep
    python bench/site_payoff.py --model /tmp/site/4class-held-4ep/model.npz \
        --alone /tmp/site/binary-base-4ep/model.npz --k 0 200 --select random review --out /tmp/site/payoff
    python bench/site_payoff.py --plot /tmp/site/payoff*/results.json --png docs/site-payoff.png
One process per k (--k 50 --select random --out /tmp/payoff-r50, ...) keeps each result safe.

The base model's source is the one it trained on: the binary set for a model with a report.json
beside it (the shipped model: its split is read from there), else `training.source` in its
metadata (a bench/cross_source.py model: the joint split's training and validation parts, less
the shared groups it was told to hold out). The other source plays the new site. Its training part, less every scan nearly duplicating one the
base model trained or was validated on, is the pool a person labels from, thinned to at most
--normal-share normal scans (a site's labels can run 9 to 1); its test part, group-disjoint from
the pool, is where each model is judged (--part val: its validation part, where fine-tuning
settings are chosen); each row also gives the fine-tuned model on the base source's own test part
(what the gate's max_drop guards). Each fine-tune is what `tumord train` does with k site
scans: start from the model; the base training scans plus the site's, the site drawn at
train.site.share of each (short: finetune_draws) epoch, each part class-balanced; 20% of the k
scans (by near-duplicate group) held out to choose the decision threshold; train.finetune_epochs
at train.finetune_lr. (The gate's site test part is not simulated: the test part is the judge.)
Scans are chosen at random, by `tumord review`'s ranking (uncertainty and feature distance, by
the base model, less scans failing the input checks), or least certain first (uncertain).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cross_source import hold_out_shared  # noqa: E402  (bench/cross_source.py)
from tumord.abstain.fit import fit_reference  # noqa: E402
from tumord.abstain.judge import AbstainSettings  # noqa: E402
from tumord.config import load_config  # noqa: E402
from tumord.data.images import ImageError, read_decoded  # noqa: E402
from tumord.data.split import group_split  # noqa: E402
from tumord.labelling.ranking import Candidate, rank  # noqa: E402
from tumord.model import checkpoint  # noqa: E402
from tumord.model.predict import predict_logits  # noqa: E402
from tumord.nn.losses import softmax  # noqa: E402
from tumord.training.calibration import fit_temperature  # noqa: E402
from tumord.training.cross_source import load_loso, scores  # noqa: E402
from tumord.training.site import choose_threshold, finetune_draws, fold_threshold, sampling_weights  # noqa: E402
from tumord.training.trainer import fit  # noqa: E402

DATASETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"


def base_parts(model, model_file: Path, loso) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """(source, train, val, test) indices: what the base model learned from and its own test part."""
    report_file = model_file.parent / "report.json"
    if report_file.is_file():  # a tumord-trained model: its own (binary, single-source) split
        report = json.loads(report_file.read_text())
        root = Path(report["summary"]["data_root"]).resolve()
        rel = {str(p.resolve().relative_to(root)): i for i, p in enumerate(loso.data.files)
               if root in p.resolve().parents}
        return "binary", *(np.array([rel[f] for f in report["split"][s]]) for s in ("train", "val", "test"))
    training = model.meta.get("training", {})
    source = training.get("source")
    if source not in loso.data.names:
        raise ValueError(f"{model_file}: no report.json and no training.source in its metadata; "
                         f"expected a tumord model or one from bench/cross_source.py train")
    train = loso.part(source, "train")
    if training.get("hold_out_shared"):  # the same groups it was trained without
        train, _ = hold_out_shared(loso, train, training["hold_out_shared"])
    if training.get("excluded_by_audit"):
        raise ValueError(f"{model_file}: trained without audit findings; its training part is not recorded")
    return source, train, loso.part(source, "val"), loso.part(source, "test")


def thin_pool(pool: np.ndarray, labels: np.ndarray, normal_share: float, rng) -> np.ndarray:
    """The pool with normal scans (label 0) dropped at random until they are at most normal_share."""
    normal, tumor = pool[labels[pool] == 0], pool[labels[pool] == 1]
    keep = min(len(normal), int(normal_share / (1 - normal_share) * len(tumor)))
    return np.sort(np.concatenate([tumor, rng.choice(normal, keep, replace=False)]))


def review_order(model, d, pool: np.ndarray, cfg: dict) -> tuple[np.ndarray, int]:
    """The pool as `tumord review` would list it (most worth labelling first), and how many scans
    it leaves out for failing the input checks."""
    settings = AbstainSettings.from_config(cfg)
    found, refused = [], 0
    for i in pool:
        try:
            raw = read_decoded(d.files[i])
        except ImageError:
            refused += 1
            continue
        if settings.checks.reasons(raw):
            refused += 1
            continue
        found.append(Candidate(str(i), d.files[i], np.asarray(d.images[i])))
    return np.array([int(c.verdict) for c in rank(found, model, settings)], dtype=int), refused


def choose(pool: np.ndarray, k: int, how: str, ranked: dict, rng) -> np.ndarray:
    if how == "random":
        return rng.choice(pool, k, replace=False)
    if len(ranked[how]) < k:
        raise ValueError(f"--k {k}: only {len(ranked[how])} scans of the pool can be chosen by {how}")
    return ranked[how][:k]


def finetune(model_file: Path, d, base_train, base_val, labelled, cfg) -> tuple:
    t = cfg["train"]
    net = checkpoint.load(model_file).net
    split = group_split(d.labels[labelled], d.groups[labelled], 0.2, 0.0, t["split_seed"])
    site_tr, site_va = labelled[split["train"]], labelled[split["val"]]
    train_idx = np.concatenate([base_train, site_tr])
    weights = sampling_weights(d.labels[train_idx], np.isin(train_idx, site_tr), t["site"]["share"])
    val_idx = np.concatenate([base_val, site_va])
    ft = {**t, "epochs": t["finetune_epochs"], "lr": t["finetune_lr"], "patience": t["finetune_epochs"]}
    load0, wall0, cpu0 = os.getloadavg()[0], time.monotonic(), time.process_time()
    draws = finetune_draws(len(site_tr), t["site"]["share"], len(train_idx), t["batch_size"])
    fit(net, d.images, d.labels, train_idx, val_idx, ft, np.random.default_rng(t["seed"]), weights=weights,
        draws=draws)
    temperature = fit_temperature(predict_logits(net, d.images, val_idx), d.labels[val_idx])
    p_val = softmax(predict_logits(net, d.images, site_va) / temperature)[:, 1]
    threshold = choose_threshold(p_val, d.labels[site_va] == 1, t["site"]["min_threshold_scans"])
    fold_threshold(net, threshold, temperature, 0, 1)
    timing = {"fine_tune_wall_seconds": round(time.monotonic() - wall0, 1),
              "fine_tune_cpu_seconds": round(time.process_time() - cpu0, 1),
              "load_at_start": round(load0, 2), "load_at_end": round(os.getloadavg()[0], 2)}
    return net, temperature, {"threshold": round(threshold, 4), "draws_per_epoch": draws,
                              "epochs": t["finetune_epochs"], **timing,
                              "site_train": int(len(site_tr)), "site_val": int(len(site_va)),
                              "site_val_normals": int((d.labels[site_va] == 0).sum())}


def run(args) -> dict:
    cfg = load_config(args.config, args.set)
    model = checkpoint.load(args.model)
    loso = load_loso(args.datasets, model.preprocess, cfg["paths"]["cache"])
    d = loso.data
    source, base_train, base_val, base_test = base_parts(model, args.model, loso)
    site, seen = loso.other(source), np.concatenate([base_train, base_val])
    natural = loso.unseen_part(site, "train", seen)
    pool = thin_pool(natural, d.labels, args.normal_share, np.random.default_rng(0))
    test = loso.judged_parts(site, base_train, base_val)[args.part]  # "test" for reported figures
    out = {"base_source": source, "site": site, "judged_on": args.part, "test": int(len(test)),
           "test_normals": int((d.labels[test] == 0).sum()),
           "pool_before_thinning": int(len(natural)), "pool_normals_before": int((d.labels[natural] == 0).sum()),
           "pool": int(len(pool)), "pool_normals": int((d.labels[pool] == 0).sum()),
           "settings": {k: cfg["train"][k] for k in ("finetune_epochs", "finetune_lr", "site")},
           "command": " ".join(sys.argv), "rows": []}

    def save(row):
        out["rows"].append(row)
        print(json.dumps(row), flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(out, indent=1))

    def own_test(logits, temperature) -> dict:  # the base source's own test part: what the gate guards
        own = scores(logits, d.labels[base_test], temperature)
        return {m: own[m] for m in ("accuracy", "balanced_accuracy", "auc")}

    if 0 in args.k:
        save({"k": 0, "select": "none", **scores(model.logits(d.images[test]), d.labels[test], model.temperature),
              "base_source_test": own_test(model.logits(d.images[base_test]), model.temperature)})
    if args.alone:
        alone = checkpoint.load(args.alone)
        save({"k": None, "select": f"trained on the {site} set alone",
              **scores(alone.logits(d.images[test]), d.labels[test], alone.temperature)})
    ranked = {}
    if "uncertain" in args.select:  # the base model's probability nearest 0.5 first (the first run's choice)
        ranked["uncertain"] = pool[np.argsort(np.abs(model.predict(d.images[pool])[:, 1] - 0.5), kind="stable")]
    if "review" in args.select:
        if model.reference is None:  # what `tumord train` stores in every new model
            model.reference = fit_reference(model.net, d.images, d.labels, base_train, d.images, base_val)
        ranked["review"], refused = review_order(model, d, pool, cfg)
        out["review_refused_by_input_checks"] = refused
    for how in args.select:
        for k in [k for k in args.k if k > 0]:
            labelled = choose(pool, k, how, ranked, np.random.default_rng(k))
            net, temperature, info = finetune(args.model, d, base_train, base_val, labelled, cfg)
            save({"k": k, "select": how, "labelled_normals": int((d.labels[labelled] == 0).sum()), **info,
                  **scores(predict_logits(net, d.images, test), d.labels[test], temperature),
                  "base_source_test": own_test(predict_logits(net, d.images, base_test), temperature)})
    return out


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
        for how, style in (("random", "o-"), ("review", "s--"), ("uncertain", "^:")):
            rows = [base] + sorted((row for row in r["rows"] if row["select"] == how), key=lambda row: row["k"])
            if len(rows) > 1:
                ax.plot([row["k"] for row in rows], [row[key] for row in rows], style,
                        label={"random": "random scans", "review": "`tumord review` ranking",
                               "uncertain": "least certain first"}[how])
        if alone:
            ax.axhline(alone[key], color="grey", ls=":", label=f"trained on the {r['site']} set alone")
            if key == "accuracy":
                ax.axhline(alone[key] - 0.03, color="red", ls=":", lw=0.8, label="target: alone - 3 points")
        ax.set(xlabel="labelled site scans k", ylabel=key.replace("_", " "), title=key.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(f"Fine-tuning a {r['base_source']}-trained model on k scans of the {r['site']} set; "
                 f"test: {r['test']} unseen scans of it ({r['test_normals']} normal)")
    fig.tight_layout()
    fig.savefig(png, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="the base model (the site's current model)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--k", type=int, nargs="+", default=[0, 50, 100, 200, 500])
    ap.add_argument("--select", nargs="+", choices=["random", "review", "uncertain"], default=["random", "review"])
    ap.add_argument("--normal-share", type=float, default=0.1,
                    help="most share of normal scans in the labelled pool (default 0.1: 9 tumors to 1 normal)")
    ap.add_argument("--alone", type=Path, default=None, help="a model trained on the site's source alone")
    ap.add_argument("--part", choices=["test", "val"], default="test",
                    help="judge on the site's test part (reported figures) or its validation part (for choosing "
                         "fine-tuning settings; it keeps copies of the base model's validation scans)")
    ap.add_argument("--datasets", type=Path, default=DATASETS)
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override one setting, e.g. --set paths.cache=/work/cache (repeatable)")
    ap.add_argument("--plot", type=Path, nargs="+", default=None, help="results.json files to plot (with --png)")
    ap.add_argument("--png", type=Path, default=None)
    args = ap.parse_args()
    if args.plot:
        plot(args.plot, args.png)
        return
    if args.model is None or args.out is None:
        ap.error("--model and --out are needed (or --plot with --png)")
    run(args)


if __name__ == "__main__":
    main()
