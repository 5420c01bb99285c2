"""Leave-one-source-out evaluation of the shipped model and of training recipes (docs/cross-source.md).

    # the shipped model (trained on the binary set) on the 4-class set: no training
    python bench/cross_source.py baseline --model models/versions/<v>/model.npz --out /tmp/loso/shipped.json
    # train a recipe on one source, judge it on the other (and on its own test part)
    python bench/cross_source.py train --source binary --recipe base --epochs 10 --out /tmp/loso/bin-base
    # the same without the scans `tumord audit` flagged (training part only)
    python bench/cross_source.py train --source binary --epochs 10 --exclude audit/audit.csv --out /tmp/loso/bin-clean
    # the table of every result file given
    python bench/cross_source.py table /tmp/loso/*.json /tmp/loso/*/result.json
    # is run B's AUC on the other source's validation part really above run A's? (paired group bootstrap)
    python bench/cross_source.py compare /tmp/loso/bin-base /tmp/loso/bin-norm_aug --part val

Scores on the other source are on its validation part (recipes are chosen there), less every scan
nearly duplicating one the model trained on, and its test part (reported once, never chosen on),
less every scan nearly duplicating one it trained or was validated on. AdaBN
rows re-estimate batch-norm statistics on the other source's unlabelled training part (labels
unused). Needs ../shared/datasets; decoded images are cached in paths.cache.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tumord.model import checkpoint  # noqa: E402
from tumord.config import load_config  # noqa: E402
from tumord.data.images import preprocess_from_config  # noqa: E402
from tumord.training.calibration import fit_temperature  # noqa: E402
from tumord.training.cross_source import load_loso, scores  # noqa: E402
from tumord.training.intervals import paired_auc_difference  # noqa: E402
from tumord.training.precise_bn import recompute_batchnorm_statistics  # noqa: E402
from tumord.model.predict import predict_logits  # noqa: E402
from tumord.nn.losses import softmax  # noqa: E402
from tumord.training.trainer import build_network, fit  # noqa: E402

DATASETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"
DOMAIN_AUG = {"gamma": 0.4, "blur": 1.2, "noise": 0.03, "bias_field": 0.6, "scale": 0.25}
RECIPES = {  # overrides of config.yaml
    "base": {},
    "norm": {"preprocess": {"normalize": "head_percentile"}},
    "aug": {"train": {"augment": DOMAIN_AUG}},
    "norm_aug": {"preprocess": {"normalize": "head_percentile"}, "train": {"augment": DOMAIN_AUG}},
    "crop": {"preprocess": {"crop": True}},
    "wide": {"model": {"channels": [24, 48, 96, 192, 384]}},
    "large": {"preprocess": {"size": 176}},  # a larger input: 1.9x the pixels of 128x128
    "crop_norm_aug": {"preprocess": {"normalize": "head_percentile", "crop": True}, "train": {"augment": DOMAIN_AUG}},
}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) else v
    return out


def _judge(net, loso, source: str, train: np.ndarray, val: np.ndarray, temperature: float,
           out_dir: Path | None = None, adabn: bool = True) -> dict:
    """Same-source test, and the other source's val and test parts (Loso.judged_parts); then AdaBN."""
    d, other = loso.data, loso.other(source)
    parts = loso.judged_parts(other, train, val)
    sets = {f"{source} test (same source)": loso.part(source, "test"),
            f"{other} val": parts["val"], f"{other} test": parts["test"]}
    for name, idx in sets.items():
        print(f"{name}: {loso.describe(idx)}", flush=True)
    logits = {name: predict_logits(net, d.images, idx) for name, idx in sets.items()}
    out = {name: scores(logits[name], d.labels[idx], temperature) for name, idx in sets.items()}
    if out_dir is not None:  # per-scan P(tumor) on the other source, for paired comparisons of runs
        for name in (f"{other} val", f"{other} test"):
            idx = sets[name]
            np.savez(out_dir / f"probs-{name.split()[-1]}.npz", files=np.array([str(d.files[i]) for i in idx]),
                     labels=d.labels[idx], groups=d.groups[idx],
                     p_tumor=softmax(logits[name] / temperature)[:, 1])
    if not adabn:
        return out
    target = loso.unseen_part(other, "train", np.concatenate([train, val]))  # unlabelled scans of the new source
    print(f"AdaBN on {other} train (labels unused): {loso.describe(target)}", flush=True)
    recompute_batchnorm_statistics(net, d.images, target, 32, np.random.default_rng(0))
    for name in (f"{other} val", f"{other} test"):
        out[name + " AdaBN"] = scores(predict_logits(net, d.images, sets[name]), d.labels[sets[name]], temperature)
    return out


def baseline(args) -> dict:
    model = checkpoint.load(args.model)
    report = json.loads((args.model.parent / "report.json").read_text())
    cfg = load_config(args.config, args.set)
    loso = load_loso(args.datasets, model.preprocess, cfg["paths"]["cache"])
    root = Path(report["summary"]["data_root"]).resolve()
    rel = {str(p.resolve().relative_to(root)): i for i, p in enumerate(loso.data.files) if root in p.resolve().parents}
    trained = np.array([rel[f] for f in report["split"]["train"]])
    validated = np.array([rel[f] for f in report["split"]["val"]])
    seen = np.concatenate([trained, validated])
    test = np.array([rel[f] for f in report["split"]["test"]])
    d = loso.data
    out = {"binary test (its own split)": scores(model.logits(d.images[test]), d.labels[test], model.temperature)}
    everything = loso.unseen_part("4class", "train", seen)
    everything = np.concatenate([everything, loso.unseen_part("4class", "val", seen),
                                 loso.unseen_part("4class", "test", seen)])
    out["4class all unseen"] = scores(model.logits(d.images[everything]), d.labels[everything], model.temperature)
    out.update({k: v for k, v in _judge(model.net, loso, "binary", trained, validated, model.temperature).items()
                if not k.startswith("binary")})
    return {"run": "shipped", "model": model.identity, "results": out}


def hold_out_shared(loso, idx: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out): idx less a random fraction of the near-duplicate groups that span both sources.

    The two sets share nearly all their normal scans, so the other source's training part has no
    normal scan a model trained on this one has not seen; holding some shared groups back leaves
    the other source unseen copies of them, normal ones included, for bench/site_payoff.py to label.
    """
    d = loso.data
    shared = np.array([g for g in np.unique(d.groups[idx]) if len(np.unique(d.source[d.groups == g])) > 1])
    rng = np.random.default_rng(seed)
    held_groups = rng.choice(shared, int(round(fraction * len(shared))), replace=False) if len(shared) else shared
    out = np.isin(d.groups[idx], held_groups)
    return idx[~out], idx[out]


def audit_findings(csv_files: list[Path]) -> set[Path]:
    """The scans `tumord audit` flagged (any finding) in its audit.csv files, as resolved paths."""
    import csv

    found = set()
    for f in csv_files:
        with open(f, newline="") as fh:
            found |= {Path(row["file"]).resolve() for row in csv.DictReader(fh) if row["finding"]}
    return found


def train(args) -> dict:
    cfg = _merge(load_config(args.config, args.set), RECIPES[args.recipe])
    cfg["train"]["epochs"] = args.epochs
    cfg["train"]["patience"] = args.epochs
    pre = preprocess_from_config(cfg)
    loso = load_loso(args.datasets, pre, cfg["paths"]["cache"])
    d = loso.data
    sources = [args.source] if args.source != "both" else d.names
    tr = np.concatenate([loso.part(s, "train") for s in sources])
    va = np.concatenate([loso.part(s, "val") for s in sources])
    held = np.zeros(0, int)
    if args.hold_out_shared:
        tr, held = hold_out_shared(loso, tr, args.hold_out_shared)
    excluded = 0
    if args.exclude:  # `tumord audit` findings: left out of the training part only
        flagged = audit_findings(args.exclude)
        keep = np.array([d.files[i].resolve() not in flagged for i in tr])
        tr, excluded = tr[keep], int((~keep).sum())
    print(f"training on {args.source}: train {loso.describe(tr)}, val {loso.describe(va)}", flush=True)
    rng = np.random.default_rng(cfg["train"]["seed"])
    net = build_network(cfg["model"], pre.size, 2, rng)
    log = open(args.out / "epochs.jsonl", "w")
    hist = fit(net, d.images, d.labels, tr, va, cfg["train"], rng,
               lambda row: (log.write(json.dumps(row) + "\n"), log.flush()))
    temperature = fit_temperature(predict_logits(net, d.images, va), d.labels[va])
    meta = checkpoint.new_metadata(net, ["normal", "tumor"], pre, temperature=temperature,
                                   training={"recipe": args.recipe, "source": args.source, "settings": cfg["train"],
                                             "hold_out_shared": args.hold_out_shared,
                                             "excluded_by_audit": excluded})
    checkpoint.save(args.out / "model.npz", net, meta)
    if args.source == "both":
        results = {f"{s} test (same source)": scores(predict_logits(net, d.images, loso.part(s, "test")),
                                                      d.labels[loso.part(s, "test")], temperature) for s in d.names}
    else:
        results = _judge(net, loso, args.source, tr, va, temperature, args.out, not args.no_adabn)
    run = f"{args.source}-{args.recipe}-{args.epochs}ep" + (f"-held{args.hold_out_shared:g}" if args.hold_out_shared else "")
    return {"run": run + ("-audit-excluded" if args.exclude else ""), "recipe": args.recipe, "source": args.source,
            "epochs": args.epochs, "train_images": int(len(tr)), "excluded_by_audit": excluded,
            "held_out_shared": int(len(held)), "train_seconds": round(hist.seconds, 1),
            "best_epoch": hist.best_epoch, "results": results}


def table(files: list[Path]) -> str:
    lines = ["| run | evaluated on | n (normal) | accuracy | balanced acc. | sensitivity | specificity | AUC | ECE |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for f in files:
        r = json.loads(Path(f).read_text())
        for name, m in r["results"].items():
            lines.append(f"| {r['run']} | {name} | {m['n']} ({m.get('normals', '?')}) | {m['accuracy']:.3f} | {m['balanced_accuracy']:.3f} | "
                         f"{m['sensitivity']:.3f} | {m['specificity']:.3f} | {m['auc']:.3f} | {m['ece']:.3f} |")
    return "\n".join(lines)


def compare(base: Path, other: Path, part: str, resamples: int) -> dict:
    """Paired group bootstrap of AUC(other run) - AUC(base run) on the scans both were judged on."""
    a, b = (np.load(Path(r) / f"probs-{part}.npz") for r in (base, other))
    common, ia, ib = np.intersect1d(a["files"], b["files"], return_indices=True)
    out = paired_auc_difference(a["p_tumor"][ia], b["p_tumor"][ib], a["labels"][ia] == 1, a["groups"][ia], resamples)
    return {"base": str(base), "other": str(other), "part": part, "scans": int(len(common)), **out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    b = sub.add_parser("baseline")
    b.add_argument("--model", type=Path, required=True)
    t = sub.add_parser("train")
    t.add_argument("--source", choices=["binary", "4class", "both"], required=True)
    t.add_argument("--recipe", choices=sorted(RECIPES), default="base")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--hold-out-shared", type=float, default=0.0, metavar="FRACTION",
                   help="leave this share of the groups shared with the other source out of training "
                        "(for bench/site_payoff.py: unseen normal scans to label)")
    t.add_argument("--no-adabn", action="store_true", help="skip the AdaBN rows (saves time)")
    t.add_argument("--exclude", type=Path, nargs="+", default=None, metavar="AUDIT.csv",
                   help="leave the scans these `tumord audit` files flag out of the training part")
    for p in (b, t):
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--datasets", type=Path, default=DATASETS)
        p.add_argument("--config", type=Path, default=None)
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one setting, e.g. --set paths.cache=/work/cache (repeatable)")
    tb = sub.add_parser("table")
    tb.add_argument("files", nargs="+", type=Path)
    c = sub.add_parser("compare", help="paired group bootstrap of the AUC difference of two train runs")
    c.add_argument("base", type=Path, help="a train --out folder")
    c.add_argument("others", nargs="+", type=Path, help="train --out folders to compare with it")
    c.add_argument("--part", choices=["val", "test"], default="val")
    c.add_argument("--resamples", type=int, default=1000)
    args = ap.parse_args()
    if args.mode == "table":
        print(table(args.files))
        return
    if args.mode == "compare":
        for other in args.others:
            print(json.dumps(compare(args.base, other, args.part, args.resamples)))
        return
    start, load_start = time.time(), [round(x, 2) for x in os.getloadavg()]
    if args.mode == "train":
        args.out.mkdir(parents=True, exist_ok=True)
        result = train(args)
        path = args.out / "result.json"
    else:
        result = baseline(args)
        path = args.out
        path.parent.mkdir(parents=True, exist_ok=True)
    result["wall_seconds"] = round(time.time() - start, 1)
    result["load_average"] = {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]}
    result["command"] = " ".join(sys.argv)
    path.write_text(json.dumps(result, indent=1))
    print(table([path]))


if __name__ == "__main__":
    main()
