"""`tumord feedback VERDICT_OR_SCAN --label CLASS`: confirm or correct a verdict for training."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tumord.commands.common import add_config_options, config_from_args
from tumord.labelling import verdicts
from tumord.labelling.filing import file_label
from tumord.logs import get_logger

log = get_logger("tumord.feedback")


def register(sub) -> None:
    p = sub.add_parser("feedback", help="label a judged scan (confirm or correct its verdict) for training")
    p.add_argument("what", metavar="VERDICT_OR_SCAN",
                   help="a verdict name (scan 7.3fa9c0d1e2b4.json), a scan's SHA-256, or a verdict or scan file")
    p.add_argument("--label", required=True, help="the right class, one of the model's classes")
    p.add_argument("--by", default=None, help="who labels (default: the login name)")
    add_config_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    output, training = Path(cfg["paths"]["output"]), Path(cfg["paths"]["training"])
    path, record, given = verdicts.find(output, args.what)
    result = file_label(record, args.label, training, given, args.by)
    agreed = "agrees with" if args.label == record["label"] else "corrects"
    print(f"{result['status']}: {result['path']} as {args.label} ({agreed} the model's {record['label']}; "
          f"provenance {result['provenance'].name})", file=sys.stderr)
    log.info("feedback." + result["status"], verdict=record["verdict"], label=args.label,
             model_label=record["label"], filed_as=str(result["path"]))
    return 0
