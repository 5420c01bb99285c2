"""`tumord train --data DIR`: train a candidate, gate it against the current model, register it."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from tumord.atomic import write_atomic
from tumord.commands.common import LOCKED, add_config_options, config_from_args, load_model, training_lock
from tumord.logs import get_logger
from tumord.model import registry

PROMOTED, FAILED, BAD_INPUT, KEPT = 0, 1, 2, 3  # and LOCKED (4), shared with `models add`

EPILOG = """\
exit codes:
  0  promoted: the candidate passed the gate and is now the current model
     (with --output: the model folder was written)
  1  unexpected failure (a bug or a crash; the traceback is in the log)
  2  bad settings, data folder, images or model file; nothing was registered
  3  kept: the candidate is registered but failed the gate; the current model stays
  4  another `tumord train` holds the lock (registry.lock); this run did nothing
A killed run leaves the registry as it was; the next run removes its leftovers.
"""

log = get_logger("tumord.train")


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model on a folder of labelled scans (one subfolder per class)",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="folder with one subfolder of images per class")
    p.add_argument("--init-from", choices=["current"], default=None,
                   help="start from the current model's weights (fine-tuning); an error if there is none")
    p.add_argument("--from-scratch", action="store_true",
                   help="train from new weights even though train.init is current (the default)")
    p.add_argument("--output", type=Path, default=None,
                   help="write the model folder here instead of adding it to the models registry (no gate)")
    add_config_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.output is not None:
        return _train_to_folder(args, cfg)
    try:
        with training_lock(cfg):
            return _train_and_gate(args, cfg)
    except registry.LockHeld as e:
        print(f"tumord train: {e}", file=sys.stderr)
        log.warning("train.locked", reason=str(e))
        return LOCKED


def _train_to_folder(args: argparse.Namespace, cfg: dict) -> int:
    from tumord.training.pipeline import train

    if args.output.exists():  # found now, not after the training it would have thrown away
        print(f"tumord train: --output {args.output} already exists; give a new folder name", file=sys.stderr)
        return BAD_INPUT
    init = _initial_model(args, cfg)
    staging = registry.new_staging(args.output.parent)
    try:
        result = train(args.data, cfg, staging, init)
        staging.rename(args.output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(f"model written to {args.output}/model.npz (version {result['meta']['version']})", file=sys.stderr)
    return PROMOTED


def _initial_model(args: argparse.Namespace, cfg: dict):
    """The current model to fine-tune, or None to train from scratch.

    --init-from current insists (an error without a fitting current model); train.init = current
    (the default) fine-tunes when the current model has the settings' architecture, preprocessing
    and the data folder's classes, and otherwise trains from scratch and says why.
    """
    import numpy as np

    from tumord.model import checkpoint
    from tumord.data.dataset import list_dataset
    from tumord.data.images import preprocess_from_config
    from tumord.training.trainer import build_network

    if args.init_from == "current":
        return load_model(None, cfg)
    if args.from_scratch or cfg["train"]["init"] == "scratch":
        return None
    try:
        current = load_model(None, cfg)
    except (checkpoint.CheckpointError, OSError, ValueError):
        return None  # no (usable) current model: nothing to start from
    net = build_network(cfg["model"], cfg["preprocess"]["size"], len(current.class_names), np.random.default_rng(0))
    why = None
    if current.net.spec != net.spec or current.net.input_shape != net.input_shape:
        why = "its architecture differs from the settings"
    elif current.preprocess != preprocess_from_config(cfg):
        why = "its preprocessing differs from the settings"
    elif list_dataset(args.data).class_names != sorted(current.class_names):
        why = f"its classes {current.class_names} differ from the data folder's"
    if why:
        print(f"tumord train: training from scratch, not from the current model: {why}", file=sys.stderr)
        log.info("train.from_scratch", reason=why)
        return None
    return current


def _train_and_gate(args: argparse.Namespace, cfg: dict) -> int:
    from tumord.training.gate import run_gate
    from tumord.training.pipeline import train

    models_dir = Path(cfg["paths"]["models"])
    leftovers = registry.clean_stale(models_dir)
    if leftovers:
        log.info("registry.cleaned", removed=leftovers)
    init = _initial_model(args, cfg)
    staging = registry.new_staging(models_dir)
    try:
        result = train(args.data, cfg, staging, init)
        report = result["report"]
        report["gate"] = gate = run_gate(staging / registry.MODEL_FILE, report, args.data, models_dir, cfg)
        write_atomic(staging / registry.REPORT_FILE, json.dumps(report, indent=1))
        version = result["meta"]["version"]
        registry.publish(models_dir, staging, version)  # from here on the version is complete and visible
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if gate["promote"]:
        try:
            registry.promote(models_dir, version, expect_current=gate["current"])
        except registry.CurrentChanged as e:
            gate["reasons"].append(f"{e} (someone promoted or rolled back); not overriding that")
    promoted = not gate["reasons"]
    pruned = registry.prune(models_dir, cfg["registry"]["keep"], spare=(version,))  # this run's candidate stays
    _print_outcome(version, gate, promoted, pruned, models_dir)
    return PROMOTED if promoted else KEPT


def _print_outcome(version: str, gate: dict, promoted: bool, pruned: list[str], models_dir: Path) -> None:
    scores = gate["candidate_scores"]
    line = (f"candidate {version}: accuracy {scores['accuracy']:.3f}, sensitivity {scores['sensitivity']:.3f} "
            f"on {gate['images']} held-out images")
    if gate["current_scores"]:
        cur = gate["current_scores"]
        line += f" (current {gate['current']}: {cur['accuracy']:.3f}, {cur['sensitivity']:.3f})"
    print(line, file=sys.stderr)
    site = gate.get("site")
    if site:
        c, cur = site["candidate_scores"], site["current_scores"]
        print(f"  site: balanced accuracy {c['balanced_accuracy']:.3f}, AUC {c['auc']:.3f} on {site['images']} "
              "held-out site scans" + (f" (current: {cur['balanced_accuracy']:.3f}, {cur['auc']:.3f})" if cur else ""),
              file=sys.stderr)
    for note in gate["notes"]:
        print(f"  note: {note}", file=sys.stderr)
    if promoted:
        print(f"promoted: {version} is now the current model in {models_dir}", file=sys.stderr)
    else:
        stays = f"{gate['current']} stays current" if gate["current"] else "there is still no current model"
        print(f"kept: {stays}; {version} is registered but not promoted because:", file=sys.stderr)
        for reason in gate["reasons"]:
            print(f"  - {reason}", file=sys.stderr)
    log.info("train.promoted" if promoted else "train.kept", version=version, current=gate["current"],
             reasons=gate["reasons"], notes=gate["notes"], candidate=scores, current_scores=gate["current_scores"],
             pruned=pruned)
