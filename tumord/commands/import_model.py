"""`tumord import-model OLD.pkl NEW.npz`: convert the original design's pickled weights safely."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tumord.commands.common import add_config_options, config_from_args


def register(sub) -> None:
    p = sub.add_parser("import-model", help="convert an original pickled model to the safe .npz format")
    p.add_argument("old", type=Path, metavar="OLD.pkl")
    p.add_argument("new", type=Path, metavar="NEW.npz")
    p.add_argument("--classes", default="normal,tumor", help="class names in output order (default: normal,tumor)")
    p.add_argument("--data", type=Path, default=None,
                   help="labelled folder whose images estimate the batch-norm statistics the original never kept")
    add_config_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tumord.model.legacy import convert, read_legacy

    cfg = config_from_args(args)
    images = None
    if args.data is not None:
        import math

        from tumord.data.cache import load_images
        from tumord.data.dataset import list_dataset
        from tumord.data.images import Preprocess

        side = math.isqrt(read_legacy(args.old)["weights_input_hidden"].shape[0])
        images, _ = load_images(list_dataset(args.data).files, Preprocess(size=side), cfg["paths"]["cache"])
    meta = convert(args.old, args.new, tuple(args.classes.split(",")), images)
    print(f"{args.new}: model {meta['version']} ({meta['training']['batchnorm_statistics']} batch-norm statistics)",
          file=sys.stderr)
    return 0
