"""The `tumord` command: each subcommand lives in tumord/commands/<name>.py with register() and run()."""
from __future__ import annotations

import argparse
import importlib
import sys

from tumord import __version__
from tumord.config import ConfigError
from tumord.logs import setup_logging
from tumord.model.checkpoint import CheckpointError

# module name in tumord.commands for each subcommand, in the order `--help` lists them
COMMANDS = ["watch", "receive", "batch", "train", "eval", "audit", "predict", "feedback", "review",
            "import_model",
            "models", "add_reference"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tumord", description="Brain MRI scan classification service.")
    parser.add_argument("--version", action="version", version=f"tumord {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"tumord.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()  # every command logs to stderr: stdout carries only its output (--json, predictions)
    try:
        return int(args.run(args) or 0)
    except (ConfigError, CheckpointError, ValueError, OSError) as e:
        # bad settings, models, data folders or images: one line that names the file, not a traceback
        print(f"tumord {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
