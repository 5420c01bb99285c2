"""Where the current model is: models/current.json names a version folder in models/versions/."""
from __future__ import annotations

import json
import os
from pathlib import Path

from tumord.atomic import fsync_dir, write_atomic

from tumord.checkpoint import CheckpointError

POINTER = "current.json"
MODEL_FILE = "model.npz"


def current_model_path(models_dir: str | Path) -> Path:
    models_dir = Path(models_dir)
    pointer = models_dir / POINTER
    try:
        version = json.loads(pointer.read_text())["current"]
    except FileNotFoundError:
        raise CheckpointError(f"{pointer}: no current model; train one (tumord train) or pass --model") from None
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{pointer}: not a valid model pointer ({e})") from None
    return models_dir / "versions" / version / MODEL_FILE


def versions_dir(models_dir: str | Path) -> Path:
    return Path(models_dir) / "versions"


def read_pointer(models_dir: str | Path) -> dict:
    try:
        return json.loads((Path(models_dir) / POINTER).read_text())
    except FileNotFoundError:
        return {}


def publish(models_dir: str | Path, staging: Path, version: str) -> Path:
    """Moves a fully written staging folder into versions/ in one rename; no half version is visible."""
    target = versions_dir(models_dir) / version
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, target)
    fsync_dir(target.parent)
    return target


def set_current(models_dir: str | Path, version: str) -> None:
    """Points current.json at version atomically, remembering the one it replaces."""
    old = read_pointer(models_dir)
    history = ([old["current"]] if old.get("current") else []) + old.get("history", [])
    pointer = {"current": version, "history": [v for v in history if v != version][:20]}
    write_atomic(Path(models_dir) / POINTER, json.dumps(pointer, indent=2) + "\n")


def new_staging(models_dir: str | Path) -> Path:
    import tempfile

    Path(models_dir).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".staging-", dir=models_dir))
