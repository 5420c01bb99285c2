"""A model made before abstention existed, given its reference without retraining.

The weights stay as they are; the reference is computed on the training and validation scans
that the model's report.json lists. The result is a new model file (a new creation time, so a new
version name; the weights' SHA-256 is unchanged) that records which version it derives from.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from tumord.model import checkpoint
from tumord.abstain.fit import fit_reference
from tumord.data.cache import load_images


def _split_images(model: checkpoint.Classifier, root: Path, names: list[str], cache) -> tuple[np.ndarray, np.ndarray]:
    files = [root / n for n in names]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: listed in the model's report.json split but not found "
                                f"({len(missing)} missing); pass the data folder the model was trained on")
    unknown = sorted({n.split("/")[0] for n in names} - set(model.class_names))
    if unknown:
        raise ValueError(f"{root}: split folders {unknown} are not the model's classes {model.class_names}")
    labels = np.array([model.class_names.index(n.split("/")[0]) for n in names])
    images, _ = load_images(files, model.preprocess, cache)
    return images, labels


def add_reference(model_file: Path, report: dict, data_root: Path, out_dir: Path, cache=None) -> dict:
    """Writes out_dir/model.npz (with reference) and out_dir/report.json; returns the new metadata."""
    model = checkpoint.load(model_file)
    split = report.get("split") or {}
    if not split.get("train") or not split.get("val"):
        raise ValueError(f"{model_file}: its report.json lists no train and validation split to build on")
    train, train_labels = _split_images(model, data_root, split["train"], cache)
    val, _ = _split_images(model, data_root, split["val"], cache)
    reference = fit_reference(model.net, train, train_labels, np.arange(len(train)), val, np.arange(len(val)))
    if reference is None:
        raise ValueError(f"{model_file}: the network has no pooled features (an MLP); it cannot score distances")
    meta = {k: v for k, v in model.meta.items() if k not in ("version", "weights_sha256", "abstain")}
    # the version name is the creation second plus the weights' hash, which stays: a later second
    # than the source's keeps the two names apart even when the source was made a moment ago
    source_created = datetime.fromisoformat(model.meta["created_at"].replace("Z", "+00:00"))
    created = max(datetime.now(timezone.utc).replace(microsecond=0), source_created + timedelta(seconds=1))
    meta["created_at"] = created.isoformat(timespec="seconds").replace("+00:00", "Z")
    meta["derived_from"] = {"version": model.meta["version"], "change": "abstention reference added, weights unchanged"}
    meta = checkpoint.save(out_dir / "model.npz", model.net, meta, reference)
    report = {**report, "model": {"version": meta["version"], "sha256": meta["weights_sha256"]},
              "derived_from": meta["derived_from"], "abstention_reference": meta["abstain"]}
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    return meta
