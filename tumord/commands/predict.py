"""`tumord predict IMAGE...`: label and class probabilities for each image."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tumord.abstain.judge import AbstainSettings, judge
from tumord.commands.common import add_config_options, config_from_args, load_model
from tumord.data.images import ImageError, read_decoded, resize, to_gray_uint8


def register(sub) -> None:
    p = sub.add_parser("predict", help="classify image files")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    p.add_argument("--model", type=Path, default=None, help="model file (default: the current model)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--explain", action="store_true",
                   help="also write a heat map of the region that drove each verdict (IMAGE_STEM.explain.png)")
    p.add_argument("--explain-dir", type=Path, default=None,
                   help="folder for the heat maps (default: beside each image)")
    add_config_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    model = load_model(args.model, cfg)
    settings = AbstainSettings.from_config(cfg)
    failed = 0
    for path in args.images:
        try:
            raw = read_decoded(path)
            img = resize(to_gray_uint8(raw, path), model.preprocess)
        except ImageError as e:
            failed += 1
            print(f"tumord predict: {e}", file=sys.stderr)
            continue
        judgement = judge(model, img[None], [settings.checks.reasons(raw)], settings)[0]
        probs = judgement.probabilities
        label = model.class_names[int(probs.argmax())]
        result = {
            "file": str(path),
            "label": label,
            "probabilities": {n: round(float(p), 6) for n, p in zip(model.class_names, probs)},
            "confidence": round(float(probs.max()), 6),
            **judgement.fields(),
            "model": model.identity,
        }
        if args.explain:
            from tumord.model.explain import write_explanation

            folder = args.explain_dir or path.parent
            folder.mkdir(parents=True, exist_ok=True)
            result["explanation"] = str(write_explanation(model, img, folder / f"{path.stem}.explain.png"))
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            shown = "  ".join(f"{n} {p:.3f}" for n, p in result["probabilities"].items())
            abstained = f"  ABSTAINED: {'; '.join(judgement.reasons)}" if judgement.abstained else ""
            print(f"{path}: {label}  ({shown}){abstained}", flush=True)
    return 1 if failed else 0
