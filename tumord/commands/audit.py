"""`tumord audit --data DIR`: list scans whose label looks wrong and scans that are not brain MR.

Writes audit.csv (every flagged scan, worst first) and audit.png (a contact sheet of them) into
--out. The method is in tumord/training/audit.py; docs/cross-source.md has what it found.
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np

from tumord.atomic import write_atomic
from tumord.commands.common import (add_config_options, add_source_options, config_from_args, labelled_sources,
                                    load_model)
from tumord.data.cache import load_images
from tumord.data.dedup import near_duplicate_groups

COLUMNS = ["file", "label", "finding", "suggested_label", "label_probability", "ct_score", "colour", "outlier_z"]


def register(sub) -> None:
    p = sub.add_parser("audit", help="find likely label errors and scans that are not brain MR in labelled folders")
    add_source_options(p)
    p.add_argument("--model", type=Path, default=None, help="model whose pooled features are used (default: current)")
    p.add_argument("--out", type=Path, default=Path("audit"), help="folder for audit.csv and audit.png")
    p.add_argument("--folds", type=int, default=5, help="folds of the out-of-fold predictions")
    p.add_argument("--ct-score", type=float, default=0.12,
                   help="CT-like at or above this share of the head at full brightness (see audit.py)")
    p.add_argument("--colour", type=float, default=4.0, help="colour above this channel difference (0-255)")
    p.add_argument("--outlier-z", type=float, default=8.0, help="unusual above this robust z of feature distance")
    p.add_argument("--sheet", type=int, default=64, help="most scans on the contact sheet")
    add_config_options(p)
    p.set_defaults(run=run)


def _findings(rows: list[dict], args) -> None:
    for r in rows:
        found = []
        if r["suggested_label"]:
            found.append("label")
        if r["ct_score"] >= args.ct_score:
            found.append("ct_like")
        if r["colour"] >= args.colour:
            found.append("colour")
        if r["outlier_z"] >= args.outlier_z:
            found.append("unusual")
        r["finding"] = "+".join(found)


def run(args: argparse.Namespace) -> int:
    from tumord.abstain.fit import layer_features
    from tumord.training import audit

    cfg = config_from_args(args)
    model = load_model(args.model, cfg)
    if not any(s.get("type") == "globalavgpool" for s in model.meta["architecture"]["layers"]):
        raise ValueError(f"{model.path}: the audit needs a CNN with global pooling (model.architecture = cnn)")
    names = model.class_names
    files, labels, images, thumbs = [], [], [], []
    for _, f, y in labelled_sources(args, names):
        imgs, th = load_images(f, model.preprocess, cfg["paths"]["cache"])
        files += f
        labels.append(y)
        images.append(np.asarray(imgs))
        thumbs.append(np.asarray(th))
    labels, images, thumbs = np.concatenate(labels), np.concatenate(images), np.concatenate(thumbs)
    groups = near_duplicate_groups(thumbs, cfg["train"]["dedup_similarity"])
    features = layer_features(model.net, images, np.arange(len(images)))["pooled"]
    probs = audit.out_of_fold_probs(features, labels, groups, len(names), args.folds)
    suggested = audit.confident_label_issues(probs, labels)
    z = audit.outlier_z(features, groups)
    rows = []
    for i, path in enumerate(files):
        colour, ct = audit.scan_statistics(path)
        rows.append({"index": i, "file": str(path), "label": names[labels[i]],
                     "suggested_label": names[suggested[i]] if suggested[i] >= 0 else "",
                     "label_probability": round(float(probs[i, labels[i]]), 4),
                     "ct_score": round(ct, 4), "colour": round(colour, 2), "outlier_z": round(float(z[i]), 2)})
    _findings(rows, args)
    flagged = sorted((r for r in rows if r["finding"]),
                     key=lambda r: (not r["finding"].startswith("label"), r["label_probability"] - 10 * r["ct_score"]))
    args.out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(flagged)
    write_atomic(args.out / "audit.csv", buf.getvalue().encode())
    if flagged:
        from tumord.labelling.sheet import contact_sheet

        shown = flagged[: args.sheet]
        captions = [[r["finding"], r["label"] + (f" > {r['suggested_label']}" if r["suggested_label"] else "")]
                    for r in shown]
        write_atomic(args.out / "audit.png", contact_sheet([np.asarray(images[r["index"]]) for r in shown], captions,
                                                           columns=8))
    counts = {k: sum(k in r["finding"].split("+") for r in flagged) for k in ("label", "ct_like", "colour", "unusual")}
    oof_acc = float((probs.argmax(1) == labels).mean())
    print(f"audited {len(rows)} scans (out-of-fold accuracy of the feature model {oof_acc:.3f}): "
          + ", ".join(f"{v} {k}" for k, v in counts.items()) + f"; {args.out / 'audit.csv'}", file=sys.stderr)
    return 0
