"""`tumord train --data DIR`: train a model, evaluate it on its group-aware test split, register it."""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from tumord import registry
from tumord.commands.common import add_config_options, config_from_args, load_model
from tumord.logs import setup_logging


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model on a folder of labelled scans (one subfolder per class)")
    p.add_argument("--data", type=Path, required=True, help="folder with one subfolder of images per class")
    p.add_argument("--init-from", choices=["current"], default=None,
                   help="start from the current model's weights (fine-tuning)")
    p.add_argument("--output", type=Path, default=None,
                   help="write the model folder here instead of adding it to the models registry")
    add_config_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tumord.training.pipeline import train

    cfg = config_from_args(args)
    setup_logging()
    models_dir = Path(cfg["paths"]["models"])
    init = load_model(None, cfg) if args.init_from == "current" else None
    staging = registry.new_staging(models_dir if args.output is None else args.output.parent)
    try:
        result = train(args.data, cfg, staging, init)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    version = result["meta"]["version"]
    if args.output is not None:
        staging.rename(args.output)
        print(f"model written to {args.output}/model.npz (version {version})", file=sys.stderr)
        return 0
    registry.publish(models_dir, staging, version)
    registry.set_current(models_dir, version)
    print(f"model {version} is now current in {models_dir}", file=sys.stderr)
    return 0
