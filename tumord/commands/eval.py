"""`tumord eval --data DIR [--data DIR ...]`: evaluate a model on labelled folders, each a source.

Several --data folders are reported each on its own and together; --map names class folders that
are not the model's classes (e.g. --map glioma=tumor). --unseen leaves out every scan that nearly
duplicates one the model trained or was validated on (listed in the report.json beside the model
file): for judging a model on another source, a scan it learned, saved again there, is not new.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from tumord.commands.common import (add_config_options, add_source_options, config_from_args, labelled_sources,
                                    load_model)
from tumord.data.cache import load_images
from tumord.data.dedup import duplicates_any_of, near_duplicate_groups
from tumord.training.intervals import group_bootstrap
from tumord.training.metrics import evaluate
from tumord.training.report import format_metrics


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a model on folders of labelled scans, each reported on its own")
    add_source_options(p)
    p.add_argument("--unseen", action="store_true",
                   help="leave out scans nearly duplicating one the model trained or was validated on")
    p.add_argument("--model", type=Path, default=None, help="model file (default: the current model)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the text report")
    add_config_options(p)
    p.set_defaults(run=run)


def _seen_thumbs(model, cfg: dict) -> np.ndarray:
    """Thumbnails of the scans the model trained or was validated on, from its report.json."""
    report_file = Path(model.path).parent / "report.json"
    try:
        report = json.loads(report_file.read_text())
        root, split = Path(report["summary"]["data_root"]), report["split"]
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"--unseen: {report_file} does not list the model's training scans ({e})") from e
    files = [root / f for f in split["train"] + split["val"]]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise ValueError(f"--unseen: {len(missing)} training scans of the model are gone, e.g. {missing[0]}")
    return np.asarray(load_images(files, model.preprocess, cfg["paths"]["cache"])[1])


def _metrics(model, images, thumbs, labels, negative: str | None, cfg: dict, title: str) -> dict:
    probs = model.predict(np.asarray(images))
    m = evaluate(probs, labels, model.class_names, negative)
    groups = near_duplicate_groups(thumbs, cfg["train"]["dedup_similarity"])
    m["intervals"] = group_bootstrap(probs, labels, groups, model.class_names, negative)
    m["data"] = title
    return m


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    model = load_model(args.model, cfg)
    negative = cfg["train"]["negative_class"]
    if negative not in model.class_names:
        negative = next((n for n in ("normal", "notumor") if n in model.class_names), None)
    seen = _seen_thumbs(model, cfg) if args.unseen else None
    per_source, pooled = {}, []
    for folder, files, labels in labelled_sources(args, model.class_names):
        images, thumbs = load_images(files, model.preprocess, cfg["paths"]["cache"])
        keep = np.arange(len(files))
        if seen is not None:
            keep = np.flatnonzero(~duplicates_any_of(np.asarray(thumbs), seen, cfg["train"]["dedup_similarity"]))
            if len(keep) == 0:
                raise ValueError(f"{folder}: every scan nearly duplicates one the model trained on; nothing unseen")
        part = (np.asarray(images)[keep], np.asarray(thumbs)[keep], labels[keep])
        pooled.append(part)
        per_source[str(folder)] = _metrics(model, *part, negative, cfg, str(folder))
        per_source[str(folder)]["left_out_seen"] = int(len(files) - len(keep))
    if len(args.data) == 1:
        result = next(iter(per_source.values()))
    else:
        result = _metrics(model, *(np.concatenate(x) for x in zip(*pooled)), negative, cfg, "all sources")
        result["sources"] = per_source
    result["model"] = model.identity
    if args.json:
        print(json.dumps(result))
        return 0
    for name, m in per_source.items():
        note = f" ({m['left_out_seen']} seen scans left out)" if args.unseen else ""
        print(format_metrics(m, f"Model {model.identity['version']} on {name}{note}"))
    if len(args.data) > 1:
        print(format_metrics(result, f"Model {model.identity['version']} on all {len(args.data)} sources"))
    return 0
