"""`tumord models list|promote|rollback|prune|add`: look after the model registry in models/.

The service follows models/current.json on its own (within watch.model_poll_seconds);
`systemctl reload tumord` makes it look at once.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tumord.commands.common import LOCKED, add_config_options, config_from_args, training_lock
from tumord.logs import get_logger
from tumord.model import registry

log = get_logger("tumord.models")


def register(sub) -> None:
    p = sub.add_parser("models", help="list, promote, roll back and prune model versions")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser("list", help="versions with creation time and test metrics; marks the current one")
    ls.add_argument("--json", action="store_true", help="print one JSON array")
    pr = actions.add_parser("promote", help="make VERSION the current model (a unique prefix is enough)")
    pr.add_argument("version")
    rb = actions.add_parser("rollback", help="make the previous current model current again")
    pu = actions.add_parser("prune", help="delete old versions now, keeping registry.keep (and current, previous)")
    add = actions.add_parser("add", help="register a model file (e.g. from import-model) as a version")
    add.add_argument("file", type=Path)
    add.add_argument("--promote", action="store_true", help="also make it the current model")
    for a in (ls, pr, rb, pu, add):  # on each action, so they go last as with the other commands
        add_config_options(a)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    models_dir = Path(cfg["paths"]["models"])
    if args.action == "list":
        return _list(models_dir, args.json)
    if args.action == "promote":
        version = registry.resolve(models_dir, args.version)
        _switched(models_dir, registry.promote(models_dir, version), version, "promoted")
    elif args.action == "rollback":
        before, after = registry.rollback(models_dir)
        _switched(models_dir, before, after, "rolled back")
    elif args.action == "prune":
        removed = registry.prune(models_dir, cfg["registry"]["keep"])
        print(f"removed {len(removed)} version(s){': ' + ', '.join(removed) if removed else ''}", file=sys.stderr)
    elif args.action == "add":
        return _add(models_dir, args, cfg)
    return 0


def _switched(models_dir: Path, before: str | None, after: str, what: str) -> None:
    print(f"{what}: {after} is now the current model in {models_dir} (was {before or 'none'})", file=sys.stderr)
    log.info(f"models.{what.replace(' ', '_')}", current=after, previous=before)


def _add(models_dir: Path, args: argparse.Namespace, cfg: dict) -> int:
    try:  # the training lock, because the next training run cleans up staging folders it does not own
        with training_lock(cfg):
            version = registry.add_model(models_dir, args.file)
    except registry.LockHeld as e:
        print(f"tumord models add: {e}", file=sys.stderr)
        return LOCKED
    print(f"added {version} to {models_dir}", file=sys.stderr)
    if args.promote:
        _switched(models_dir, registry.promote(models_dir, version), version, "promoted")
    return 0


def _fmt(value) -> str:
    return "  -  " if value is None else f"{value:.3f}"


def _list(models_dir: Path, as_json: bool) -> int:
    rows = registry.describe(models_dir)
    if as_json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print(f"no versions in {registry.versions_dir(models_dir)}; train one with tumord train", file=sys.stderr)
        return 0
    print(f"{'VERSION':<26} {'CREATED':<21} {'ACC':>5} {'SENS':>5} {'SPEC':>5} {'AUC':>5} {'N':>5} "
          f"{'SITE-BACC':>9} {'SITE-N':>6}  GATE")
    for r in rows:
        mark = "current" if r["current"] else "previous" if r["previous"] else ""
        if "error" in r:
            print(f"{r['version']:<26} unreadable: {r['error']}  {mark}")
            continue
        t = r["test"]
        n = "-" if t["n"] is None else str(t["n"])
        site = r.get("site") or {}
        print(f"{r['version']:<26} {r['created_at'] or '-':<21} {_fmt(t['accuracy'])} {_fmt(t['sensitivity'])} "
              f"{_fmt(t['specificity'])} {_fmt(t['auc'])} {n:>5} {_fmt(site.get('balanced_accuracy')):>9} "
              f"{site.get('n', '-'):>6}  {r['gate'] or '-':<6}  {mark}".rstrip())
    return 0
