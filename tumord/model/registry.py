"""The model registry in models/: immutable versions, one pointer to the current one, and locks.

    models/versions/<version>/   model.npz, report.json, report.png; never changed once there
    models/current.json          {"current": VERSION, "history": [previous, older, ...]}
    models/train.lock            held (flock) by the one `tumord train` that may run
    models/.pointer.lock         held briefly by whoever rewrites current.json
    models/.staging-*, .trash-*  work folders; never read, cleaned by the next training run

A version appears in versions/ by one rename of a complete, fsynced folder, and current.json is
replaced by one rename, so a reader (the service) sees the old state or the new, never a part.
flock locks die with their process, so a killed run never leaves the registry locked.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tumord.atomic import TEMP_PREFIX, fsync_dir, write_atomic
from tumord.model import checkpoint
from tumord.model.checkpoint import CheckpointError

POINTER = "current.json"
MODEL_FILE = "model.npz"
REPORT_FILE = "report.json"
POINTER_LOCK = ".pointer.lock"
STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".trash-"
HISTORY_LENGTH = 20
ANY = object()  # promote(): no expectation about the current version


class LockHeld(RuntimeError):
    """Another process holds the training lock."""


class CurrentChanged(RuntimeError):
    """current.json no longer names the version a decision was based on."""


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
    """current.json as a dict; {} when there is none yet."""
    pointer = Path(models_dir) / POINTER
    try:
        data = json.loads(pointer.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as e:  # only a hand edit can do this: writes are atomic
        raise CheckpointError(f"{pointer}: not a valid model pointer ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("history", []), list):
        raise CheckpointError(f"{pointer}: not a valid model pointer (expected current and history keys)")
    return data


def current_version(models_dir: str | Path) -> str | None:
    return read_pointer(models_dir).get("current")


# ---- locks ---------------------------------------------------------------------------------

def lock_path(models_dir: str | Path, name: str) -> Path:
    """The training lock file: registry.lock, relative to the models folder unless absolute."""
    return Path(models_dir) / name  # an absolute name wins the join


@contextmanager
def train_lock(path: str | Path) -> Iterator[None]:
    """Holds an exclusive flock on path, or raises LockHeld naming the holder at once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise LockHeld(f"{path}: another `tumord train` (pid {holder}) is running; "
                           "this run does nothing") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # for the message above; the flock is the lock
        yield
    finally:
        os.close(fd)  # closing releases the flock; the file stays, so no one races on creating it


@contextmanager
def pointer_lock(models_dir: str | Path) -> Iterator[None]:
    """Serializes read-modify-write of current.json (train, promote, rollback, prune); waits."""
    Path(models_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(models_dir) / POINTER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ---- writing versions ----------------------------------------------------------------------

def new_staging(models_dir: str | Path) -> Path:
    Path(models_dir).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=models_dir))


def _seal(folder: Path) -> None:
    """Makes a staged version readable by the service's user and durable before it is published."""
    for p in folder.iterdir():
        if p.is_file():
            os.chmod(p, 0o644)  # atomic writes create 0600 files; models/ itself guards access
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    os.chmod(folder, 0o755)  # mkdtemp made it 0700
    fsync_dir(folder)


def publish(models_dir: str | Path, staging: Path, version: str) -> Path:
    """Moves a fully written staging folder into versions/ in one rename; no half version is visible."""
    target = versions_dir(models_dir) / version
    target.parent.mkdir(parents=True, exist_ok=True)
    _seal(staging)  # the rename must not outlive a power cut that loses the files' contents
    if target.exists():  # the name holds the weights' hash: this exact model is already registered
        shutil.rmtree(staging)
        return target
    os.replace(staging, target)
    fsync_dir(target.parent)
    return target


def add_model(models_dir: str | Path, model_file: str | Path) -> str:
    """Registers an existing model file (imported, shipped or trained elsewhere) as a version."""
    model = checkpoint.load(model_file)
    staging = new_staging(models_dir)
    try:
        shutil.copyfile(model_file, staging / MODEL_FILE)
        report = Path(model_file).with_name(REPORT_FILE)
        if report.is_file():
            shutil.copyfile(report, staging / REPORT_FILE)
        publish(models_dir, staging, model.identity["version"])
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return model.identity["version"]


# ---- the pointer ---------------------------------------------------------------------------

def set_current(models_dir: str | Path, version: str) -> None:
    """Points current.json at version atomically, remembering the one it replaces.

    Callers that decide on the current state first should hold pointer_lock (see promote).
    """
    old = read_pointer(models_dir)
    history = ([old["current"]] if old.get("current") else []) + old.get("history", [])
    _write_pointer(models_dir, version, [v for v in history if v != version])


def _write_pointer(models_dir: str | Path, version: str, history: list[str]) -> None:
    pointer = {"current": version, "history": history[:HISTORY_LENGTH]}
    os.chmod(write_atomic(Path(models_dir) / POINTER, json.dumps(pointer, indent=2) + "\n"), 0o644)


def resolve(models_dir: str | Path, name: str) -> str:
    """A version by its full name or a unique prefix of it."""
    names = version_names(models_dir)
    if name in names:
        return name
    matches = [v for v in names if v.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ValueError(f"{versions_dir(models_dir)}: no version {name!r}; see `tumord models list`")
    raise ValueError(f"{name!r} matches {len(matches)} versions ({', '.join(matches)}); give more of the name")


def _check_loads(models_dir: str | Path, version: str) -> None:
    model_file = versions_dir(models_dir) / version / MODEL_FILE
    check_folder(model_file, checkpoint.load(model_file).identity["version"])  # CheckpointError says what is wrong


def check_folder(model_file: Path, own_version: str) -> None:
    """Refuses a model whose version folder is named after another version.

    A version folder copied by hand under another name still holds a model stamped with the
    original version; serving it would make `models list`, the service and the verdicts disagree.
    """
    folder = Path(model_file).parent.name
    if folder != own_version:
        raise CheckpointError(f"{model_file}: the folder is named {folder} but the model in it is version "
                              f"{own_version}; promote {own_version} itself, a copied version folder is never served")


def promote(models_dir: str | Path, version: str, expect_current: str | None | object = ANY) -> str | None:
    """Makes version current after checking it loads; returns the version it replaced.

    With expect_current given (a version, or None for "no current model"), raises CurrentChanged
    instead of overriding a pointer someone moved in the meantime.
    """
    _check_loads(models_dir, version)
    with pointer_lock(models_dir):
        before = current_version(models_dir)
        if expect_current is not ANY and before != expect_current:
            raise CurrentChanged(f"the current model changed from {expect_current} to {before} meanwhile")
        if before != version:
            set_current(models_dir, version)
    return before


def rollback(models_dir: str | Path) -> tuple[str, str]:
    """Makes the previous current model current again; returns (from, to).

    The version rolled back from leaves the history, so rolling back again goes further back.
    """
    with pointer_lock(models_dir):
        pointer = read_pointer(models_dir)
        now, history = pointer.get("current"), list(pointer.get("history", []))
        while history and not (versions_dir(models_dir) / history[0] / MODEL_FILE).is_file():
            history.pop(0)  # pruned or removed by hand
        if now is None or not history:
            raise ValueError(f"{Path(models_dir) / POINTER}: no previous model to roll back to")
        target = history.pop(0)
        _check_loads(models_dir, target)
        _write_pointer(models_dir, target, history)
    return now, target


# ---- reading versions ----------------------------------------------------------------------

def version_names(models_dir: str | Path) -> list[str]:
    """Published versions, oldest first (names start with the UTC creation time)."""
    root = versions_dir(models_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _metadata(model_file: Path) -> dict:
    """The model's metadata without loading its weights."""
    try:
        with np.load(model_file, allow_pickle=False) as npz:
            return json.loads(npz[checkpoint.META_KEY].tobytes().decode())
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{model_file}: cannot read its metadata ({e})") from None


def read_report(models_dir: str | Path, version: str) -> dict | None:
    try:
        return json.loads((versions_dir(models_dir) / version / REPORT_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None


def describe(models_dir: str | Path) -> list[dict]:
    """One row per version: name, creation time, test metrics, gate outcome, current/previous."""
    pointer = read_pointer(models_dir)
    current, history = pointer.get("current"), pointer.get("history", [])
    rows = []
    for name in version_names(models_dir):
        row = {"version": name, "current": name == current, "previous": bool(history) and name == history[0]}
        try:
            meta = _metadata(versions_dir(models_dir) / name / MODEL_FILE)
        except CheckpointError as e:
            rows.append({**row, "error": str(e)})
            continue
        if meta.get("version") != name:  # a version folder copied by hand: never served (see _check_loads)
            rows.append({**row, "error": f"the model in this folder is version {meta.get('version')}; "
                                        "a copied version folder is never served"})
            continue
        report = read_report(models_dir, name) or {}
        test = report.get("test") or meta.get("metrics", {}).get("test") or {}
        gate = report.get("gate")
        rows.append({**row, "created_at": meta.get("created_at"), "sha256": meta.get("weights_sha256"),
                     "test": {k: test.get(k) for k in ("accuracy", "sensitivity", "specificity", "auc", "n")},
                     "gate": None if gate is None else ("passed" if gate["promote"] else "failed"),
                     "site": ((gate or {}).get("site") or {}).get("candidate_scores")})
    return rows


# ---- cleaning up ---------------------------------------------------------------------------

def _discard(path: Path, models_dir: Path) -> None:
    """Removes a folder by first renaming it out of sight, so a crash never leaves half of it visible."""
    trash = Path(tempfile.mkdtemp(prefix=TRASH_PREFIX, dir=models_dir))
    os.replace(path, trash / path.name)
    fsync_dir(path.parent)
    shutil.rmtree(trash, ignore_errors=True)


def prune(models_dir: str | Path, keep: int, spare: tuple[str, ...] = ()) -> list[str]:
    """Deletes all but the newest `keep` versions, never the current, the previous, or `spare`."""
    if keep < 0:
        raise ValueError(f"registry.keep = {keep}: must be 0 or more")
    models_dir = Path(models_dir)
    with pointer_lock(models_dir):
        pointer = read_pointer(models_dir)
        history = pointer.get("history", [])
        protected = {pointer.get("current"), *history[:1], *spare}
        names = version_names(models_dir)
        doomed = [v for v in names[: max(len(names) - keep, 0)] if v not in protected]
        if not doomed:
            return []
        if pointer.get("current"):  # forget them first: a rollback must never aim at a deleted version
            _write_pointer(models_dir, pointer["current"], [v for v in history if v not in doomed])
        for v in doomed:
            _discard(versions_dir(models_dir) / v, models_dir)
    return doomed


def clean_stale(models_dir: str | Path) -> list[str]:
    """Removes what killed runs left behind. Only the holder of the training lock may call this."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    removed = []
    with pointer_lock(models_dir):  # a promote in flight may own a temporary pointer file right now
        for p in models_dir.iterdir():
            if p.name.startswith((STAGING_PREFIX, TRASH_PREFIX)) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.name.startswith((f".{POINTER}.", f"{TEMP_PREFIX}{POINTER}.")) and p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)
            else:
                continue
            removed.append(p.name)
    return removed
