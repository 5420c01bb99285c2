"""Options and helpers shared by several subcommands."""
from __future__ import annotations

import argparse
from pathlib import Path

from tumord.config import load_config
from tumord.model import checkpoint, registry
from tumord.model.registry import current_model_path

LOCKED = 4  # exit code of `train` and `models add`: another `tumord train` holds the training lock


def add_log_option(p: argparse.ArgumentParser) -> None:
    """--log-json, for the long-running commands (watch, receive)."""
    p.add_argument("--log-json", action="store_true", default=None,
                   help="JSON log lines even in a terminal (the default under systemd or a pipe)")


def add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None,
                   help="YAML settings (default: ./config.yaml if present, else built-in defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set train.epochs=10 (repeatable)")


def add_source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, action="append",
                   help="folder with one subfolder per class (repeatable: one source each)")
    p.add_argument("--map", action="append", default=[], metavar="FOLDER=CLASS",
                   help="a class folder that is not a class of the model, e.g. glioma=tumor (repeatable)")


def labelled_sources(args, class_names: list[str]) -> list[tuple[Path, list[Path], "np.ndarray"]]:
    """(folder, files, labels) per --data folder, --map applied; a folder with no class is an error."""
    from tumord.data.sources import Source, parse_class_map

    mapping = parse_class_map(args.map, class_names, "--map")
    return [(folder, *Source.of(str(folder), folder, class_map=mapping).list(class_names)) for folder in args.data]


def config_from_args(args) -> dict:
    path = args.config
    if path is None and Path("config.yaml").is_file():
        path = Path("config.yaml")
    return load_config(path, args.set)


def load_model(model: Path | None, cfg: dict) -> checkpoint.Classifier:
    return checkpoint.load(model if model is not None else current_model_path(cfg["paths"]["models"]))


def training_lock(cfg: dict):
    """Holds the registry's training lock (registry.lock in paths.models) or raises LockHeld."""
    return registry.train_lock(registry.lock_path(cfg["paths"]["models"], cfg["registry"]["lock"]))
