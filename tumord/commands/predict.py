"""`tumord predict IMAGE...`: label and class probabilities for each image."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tumord.commands.common import add_config_options, config_from_args, load_model
from tumord.data.images import ImageError, read_scan


def register(sub) -> None:
    p = sub.add_parser("predict", help="classify image files")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    p.add_argument("--model", type=Path, default=None, help="model file (default: the current model)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    add_config_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    model = load_model(args.model, cfg)
    failed = 0
    for path in args.images:
        try:
            img = read_scan(path, model.preprocess)
        except ImageError as e:
            failed += 1
            print(f"tumord predict: {e}", file=sys.stderr)
            continue
        probs = model.predict(img[None])[0]
        label = model.class_names[int(probs.argmax())]
        result = {
            "file": str(path),
            "label": label,
            "probabilities": {n: round(float(p), 6) for n, p in zip(model.class_names, probs)},
            "confidence": round(float(probs.max()), 6),
            "model": model.identity,
        }
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            shown = "  ".join(f"{n} {p:.3f}" for n, p in result["probabilities"].items())
            print(f"{path}: {label}  ({shown})", flush=True)
    return 1 if failed else 0
