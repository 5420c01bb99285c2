"""`tumord add-reference`: fit a model's abstention reference again without retraining, as a new version
(a model trained before abstention existed, or before the reference kept the block before the last)."""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tumord.abstain.upgrade import add_reference
from tumord.commands.common import add_config_options, config_from_args, training_lock
from tumord.logs import get_logger
from tumord.model import checkpoint, registry
from tumord.training.rebuild import training_scans

log = get_logger("tumord.models")


def register(sub) -> None:
    p = sub.add_parser("add-reference", help="fit a model's abstention reference again without retraining it")
    p.add_argument("--version", default=None, help="the version to upgrade (default: the current one)")
    p.add_argument("--data", type=Path, default=None,
                   help="the folder it was trained on (default: data_root in its report.json)")
    p.add_argument("--promote", action="store_true", help="make the new version current (the old one stays)")
    add_config_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    models_dir = Path(cfg["paths"]["models"])
    version = registry.resolve(models_dir, args.version) if args.version else registry.current_version(models_dir)
    if version is None:
        raise ValueError(f"{models_dir}: no current model; name one with --version")
    report = registry.read_report(models_dir, version)
    if report is None:
        raise ValueError(f"{registry.versions_dir(models_dir) / version}: no readable report.json with its split")
    data = args.data or Path(report.get("summary", {}).get("data_root", ""))
    model = checkpoint.load(registry.versions_dir(models_dir) / version / registry.MODEL_FILE)
    scans = training_scans(model, report, data, cfg)
    with tempfile.TemporaryDirectory(prefix=".add-reference-", dir=models_dir) as tmp:
        meta = add_reference(model, report, scans, Path(tmp))
        # under the training lock: a training run cleans up staging folders it does not own
        with training_lock(cfg):
            new = registry.add_model(models_dir, Path(tmp) / registry.MODEL_FILE)
    info = meta["abstain"]
    print(f"added {new} (from {version}, same weights): reference of {info['bank']} training scans, "
          f"thresholds from {info['validation_scans']} validation scans", file=sys.stderr)
    log.info("models.reference_added", version=new, derived_from=version, reference=info)
    if args.promote:
        before = registry.promote(models_dir, new)
        print(f"promoted: {new} is now the current model in {models_dir} (was {before or 'none'})", file=sys.stderr)
    return 0
