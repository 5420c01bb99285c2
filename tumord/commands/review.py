"""`tumord review [--next N] [--sheet FILE.png]`: the archived scans worth labelling first."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tumord.abstain.judge import AbstainSettings
from tumord.atomic import write_atomic
from tumord.commands.common import add_config_options, config_from_args, load_model
from tumord.labelling.ranking import candidates, rank
from tumord.labelling.sheet import contact_sheet


def register(sub) -> None:
    p = sub.add_parser("review", help="list archived scans whose labels would teach the model most")
    p.add_argument("--next", type=int, default=20, metavar="N", help="how many to list (default 20)")
    p.add_argument("--sheet", type=Path, default=None, metavar="FILE.png", help="also write them as a contact sheet")
    p.add_argument("--model", type=Path, default=None, help="model file (default: the current model)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    add_config_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.next < 1:
        raise ValueError(f"--next {args.next}: expected a positive number of scans")
    if args.sheet is not None and args.sheet.suffix.lower() != ".png":
        raise ValueError(f"--sheet {args.sheet}: expected a .png file name")
    cfg = config_from_args(args)
    model = load_model(args.model, cfg)
    settings = AbstainSettings.from_config(cfg)
    found, refused = candidates(Path(cfg["paths"]["output"]), Path(cfg["paths"]["training"]), model, settings)
    top = rank(found, model, settings)[: args.next]
    note = f"{len(found)} unlabelled archived scans" + (f" ({refused} more fail the input checks)" if refused else "")
    if not top:
        print(f"nothing to review: {note}", file=sys.stderr)
        return 0
    if args.json:
        for i, c in enumerate(top, 1):
            print(json.dumps({"rank": i, "verdict": c.verdict, "scan": str(c.scan), "label": c.label,
                              "confidence": round(c.confidence, 4), "uncertainty": round(c.uncertainty, 4),
                              "relative_distance": None if c.distance is None else round(c.distance, 4),
                              "priority": round(c.priority, 4)}))
    else:
        print(f"{'#':>3}  {'PRIORITY':>8}  {'LABEL':<10} {'CONF':>5}  {'DIST':>5}  VERDICT")
        for i, c in enumerate(top, 1):
            dist = "  -  " if c.distance is None else f"{c.distance:5.2f}"
            print(f"{i:>3}  {c.priority:8.3f}  {c.label:<10} {c.confidence:5.3f}  {dist}  {c.verdict}")
    print(f"{note}; DIST is the feature distance over the abstention threshold (above 1: abstains). "
          "Label with: tumord feedback VERDICT --label CLASS", file=sys.stderr)
    if args.sheet is not None:
        captions = [[f"#{i} {c.label} {c.confidence:.2f}", c.verdict] for i, c in enumerate(top, 1)]
        write_atomic(args.sheet, contact_sheet([c.image for c in top], captions))
        print(f"contact sheet: {args.sheet}", file=sys.stderr)
    return 0
