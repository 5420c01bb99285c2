"""`tumord batch`: classify a folder tree or a manifest of scans on a Dask cluster, each exactly once."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tumord.abstain.judge import AbstainSettings
from tumord.commands.common import add_config_options, config_from_args
from tumord.logs import get_logger, setup_logging
from tumord.model.registry import current_model_path


def register(sub) -> None:
    p = sub.add_parser(
        "batch", help="classify an archive of scans on a Dask cluster (pip install 'tumord[batch]')",
        description="Judge every scan under a folder (or listed in a manifest) on a Dask cluster: a local one "
                    "sized to this machine, or a running one. Verdicts go to OUT/<model version>/ (one JSON per "
                    "scan, named by its bytes, as the service's), failures to failed/, and a table to "
                    "verdicts.csv. A repeated run skips what is committed.")
    p.add_argument("--data", type=Path, required=True, metavar="DIR_OR_MANIFEST",
                   help="folder of scans (walked recursively) or a manifest: one path per line, or a CSV with a "
                        "'path' column (relative paths are relative to the manifest)")
    p.add_argument("--output", type=Path, required=True, metavar="OUT", help="folder for verdicts and the table")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="address of a running Dask scheduler (e.g. tcp://host:8786); default: a local cluster")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes of the local cluster (default: one per core)")
    p.add_argument("--model", type=Path, default=None, metavar="M",
                   help="model file (default: the current model in paths.models); workers must see the same path")
    p.add_argument("--chunk-size", type=int, default=200, metavar="N", help="scans per Dask task (default 200)")
    p.add_argument("--log-json", action="store_true", default=None, help="JSON log lines even in a terminal")
    add_config_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers {args.workers}: expected a positive number of worker processes")
    if args.workers is not None and args.scheduler:
        raise ValueError("--workers sizes the local cluster; with --scheduler the cluster's own workers are used")
    if args.chunk_size < 1:
        raise ValueError(f"--chunk-size {args.chunk_size}: expected a positive number of scans per task")
    if not args.data.exists():
        raise ValueError(f"--data {args.data}: no such folder or manifest file")
    try:
        from tumord.batch.run import Settings, report, run as run_batch
    except ImportError as e:
        print(f"tumord batch: needs dask.distributed ({e.name} is missing); install it with "
              f"pip install 'tumord[batch]'", file=sys.stderr)
        return 2
    model = args.model if args.model is not None else current_model_path(cfg["paths"]["models"])
    settings = Settings(data=args.data, output=args.output, model=model, scheduler=args.scheduler,
                        workers=args.workers, chunk_size=args.chunk_size, max_pixels=cfg["watch"]["max_pixels"],
                        max_bytes=cfg["watch"]["max_bytes"], progress=sys.stdout.isatty(),
                        abstain=AbstainSettings.from_config(cfg))
    setup_logging(json_lines=args.log_json)
    log = get_logger("tumord.batch")
    summary = run_batch(settings, log)
    log.info("batch.finished", scans=summary.inputs, judged=summary.judged, already_done=summary.found,
             labels=dict(summary.labels), failed=len(summary.failures), chunks_failed=len(summary.chunk_errors),
             seconds=round(summary.seconds, 2), scans_per_s=round(summary.scans_per_s, 1),
             table=str(summary.folder / "verdicts.csv"))
    print(report(summary), flush=True)
    return 1 if summary.chunk_errors else 0
