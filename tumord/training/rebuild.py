"""A trained model's own training and validation scans, assembled again from its records.

`tumord add-reference` fits an abstention reference to a model after the fact; the reference must
come from the scans the model trained and was validated on, as `tumord train` fits it: the main
folder's split plus every `train.extra_data` folder (less the near-duplicates of the held-out
scans). The data are assembled again by the same code (`pipeline.prepare`) with the settings the
model file records, and the split must come out exactly as its report.json lists it; otherwise
the data or the code changed since, and nothing is fitted.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tumord.model.checkpoint import Classifier
from tumord.training.pipeline import prepare, split_record


def training_scans(model: Classifier, report: dict, data_root: Path, cfg: dict) -> dict[str, np.ndarray]:
    """{"images", "labels", "train", "val"}: images and labels with the training and validation indices."""
    settings = model.meta.get("training", {}).get("settings")
    if not settings or not report.get("split"):
        raise ValueError(f"{model.path}: it records no training settings or split to assemble its data again")
    if report.get("site"):
        raise ValueError(f"{model.path}: it trained on a site's labelled scans too ({report['site'].get('root')}); "
                         f"add-reference assembles the shipped sources only: retrain with `tumord train` instead")
    pre = model.preprocess
    cfg = {**cfg, "train": {**cfg["train"], **settings},
           "preprocess": {**cfg["preprocess"], "size": pre.size, "crop": pre.crop, "normalize": pre.normalize}}
    if not Path(data_root).is_dir():
        raise FileNotFoundError(f"{data_root}: the folder the model was trained on is not there; pass it with --data")
    data = prepare(Path(data_root), cfg, model.class_names)
    rebuilt = split_record(data)
    for part in ("train", "val", "test"):
        if rebuilt[part] != report["split"].get(part):
            missing = sorted(set(report["split"].get(part, [])) - set(rebuilt[part]))[:1]
            raise ValueError(f"{data_root}: the {part} split assembled again differs from the one report.json lists "
                             f"({len(rebuilt[part])} scans against {len(report['split'].get(part, []))}"
                             f"{f', e.g. {missing[0]} is missing' if missing else ''}); the data or the code changed")
    images, labels, train = data.training_set()
    return {"images": images, "labels": labels, "train": train, "val": data.split["val"]}
