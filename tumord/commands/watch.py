"""`tumord watch`: classify every scan dropped into the input folder, exactly once."""
from __future__ import annotations

import argparse
from pathlib import Path

from tumord.commands.common import add_config_options, add_log_option, config_from_args
from tumord.config import ConfigError
from tumord.logs import get_logger, setup_logging
from tumord.service.service import Service, Settings


def register(sub) -> None:
    p = sub.add_parser("watch", help="run the folder-watching classification service",
                       description="Watch the input folder and write a verdict for each new scan to the output "
                                   "folder. SIGTERM/SIGINT drain and exit 0; SIGHUP reloads the model.")
    p.add_argument("--input", type=Path, default=None, help="folder to watch (overrides paths.input)")
    p.add_argument("--output", type=Path, default=None, help="folder for verdicts (overrides paths.output)")
    p.add_argument("--model", type=Path, default=None,
                   help="serve this model file (reloaded on SIGHUP) instead of following models/current.json")
    add_log_option(p)
    add_config_options(p)
    p.set_defaults(run=run)


def _source(args) -> str:
    if args.config is not None:
        return str(args.config)
    return "config.yaml" if Path("config.yaml").is_file() else "defaults"


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    source = _source(args) + (" with --set" if args.set else "")
    for flag, key in (("--input", "input"), ("--output", "output")):
        value = getattr(args, key)
        if value is not None:  # set directly: a path is not YAML to parse
            cfg["paths"][key] = str(value)
            if key == "input" and value.exists() and not value.is_dir():
                raise ConfigError(f"{flag} {value}: not a folder")
    settings = Settings.from_config(cfg, source, model_file=args.model)
    setup_logging(json_lines=args.log_json)
    return Service(settings, get_logger("tumord.watch")).run()
