"""`tumord eval --data DIR`: evaluate a model on a labelled folder (every image in it)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tumord.commands.common import add_config_options, config_from_args, load_model
from tumord.data.cache import load_images
from tumord.data.dataset import list_dataset
from tumord.data.dedup import near_duplicate_groups
from tumord.training.intervals import group_bootstrap
from tumord.training.metrics import evaluate
from tumord.training.report import format_metrics


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a model on a folder of labelled scans")
    p.add_argument("--data", type=Path, required=True, help="folder with one subfolder per class")
    p.add_argument("--model", type=Path, default=None, help="model file (default: the current model)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the text report")
    add_config_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    model = load_model(args.model, cfg)
    listing = list_dataset(args.data, model.class_names)
    images, thumbs = load_images(listing.files, model.preprocess, cfg["paths"]["cache"])
    probs = model.predict(images)
    negative = cfg["train"]["negative_class"]
    if negative not in model.class_names:
        negative = next((n for n in ("normal", "notumor") if n in model.class_names), None)
    labels = np.array(listing.labels)
    metrics = evaluate(probs, labels, model.class_names, negative)
    groups = near_duplicate_groups(thumbs, cfg["train"]["dedup_similarity"])
    metrics["intervals"] = group_bootstrap(probs, labels, groups, model.class_names, negative)
    metrics["model"] = model.identity
    metrics["data"] = str(args.data)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(format_metrics(metrics, f"Model {model.identity['version']} on {args.data}"))
    return 0
