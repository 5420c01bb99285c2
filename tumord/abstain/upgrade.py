"""A model given its abstention reference without retraining: made before abstention existed,
or before the reference kept the block before the last one's statistics (method blocks).

The weights stay as they are; the reference is computed on the model's own training and
validation scans (`training.rebuild` assembles them). The result is a new model file (a new
creation time, so a new version name; the weights' SHA-256 is unchanged) that records which
version it derives from.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from tumord.abstain.fit import fit_reference
from tumord.model import checkpoint


def add_reference(model: checkpoint.Classifier, report: dict, scans: dict[str, np.ndarray], out_dir: Path) -> dict:
    """Writes out_dir/model.npz (with reference) and out_dir/report.json; returns the new metadata.
    scans: images and labels with the training and validation indices (`training.rebuild`)."""
    reference = fit_reference(model.net, scans["images"], scans["labels"], scans["train"], scans["images"],
                              scans["val"])
    if reference is None:
        raise ValueError(f"{model.path}: the network has no pooled features (an MLP); it cannot score distances")
    meta = {k: v for k, v in model.meta.items() if k not in ("version", "weights_sha256", "abstain")}
    # the version name is the creation second plus the weights' hash, which stays: a later second
    # than the source's keeps the two names apart even when the source was made a moment ago
    source_created = datetime.fromisoformat(model.meta["created_at"].replace("Z", "+00:00"))
    created = max(datetime.now(timezone.utc).replace(microsecond=0), source_created + timedelta(seconds=1))
    meta["created_at"] = created.isoformat(timespec="seconds").replace("+00:00", "Z")
    meta["derived_from"] = {"version": model.meta["version"], "change": "abstention reference fitted, weights unchanged"}
    meta = checkpoint.save(out_dir / "model.npz", model.net, meta, reference)
    report = {**report, "model": {"version": meta["version"], "sha256": meta["weights_sha256"]},
              "derived_from": meta["derived_from"], "abstention_reference": meta["abstain"]}
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    return meta
