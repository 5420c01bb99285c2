"""Labelled folders used for training only, e.g. a related dataset whose classes map onto the model's.

Their images never enter validation or test, and any that nearly duplicates a validation or test
image of the main data is left out: the evaluation would otherwise grade the model on scans it
trained on (related public datasets share many images).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tumord.data.cache import load_images
from tumord.data.dataset import list_dataset
from tumord.data.dedup import duplicates_any_of
from tumord.data.images import Preprocess
from tumord.data.sources import parse_class_map


@dataclass
class Extra:
    images: np.ndarray
    labels: np.ndarray
    summary: list[dict] = field(default_factory=list)


def class_mapping(pairs: list[str], class_names: list[str]) -> dict[str, str]:
    """["glioma=tumor", ...] -> {"glioma": "tumor", ...}, every target a class of the model."""
    return parse_class_map(pairs, class_names, "train.extra_classes")


def load_extra(folders: list[str], pairs: list[str], class_names: list[str], pre: Preprocess, cache_dir,
               held_out_thumbs: np.ndarray, similarity: float) -> Extra:
    mapping = class_mapping(pairs, class_names)
    images, labels, summary = [], [], []
    for folder in folders:
        listing = list_dataset(folder)
        targets = []
        for name in listing.class_names:
            target = mapping.get(name, name)
            if target not in class_names:
                raise ValueError(f"train.extra_data: {Path(folder) / name}/ matches no class of the model "
                                 f"({', '.join(class_names)}); map it in train.extra_classes, e.g. '{name}=...'")
            targets.append(class_names.index(target))
        imgs, thumbs = load_images(listing.files, pre, cache_dir)
        keep = np.flatnonzero(~duplicates_any_of(np.asarray(thumbs), held_out_thumbs, similarity))
        images.append(np.asarray(imgs)[keep])
        labels.append(np.asarray(targets)[np.asarray(listing.labels)[keep]])
        summary.append({"folder": str(Path(folder).resolve()), "images": len(listing.files), "used": int(len(keep)),
                        "left_out_near_duplicates": int(len(listing.files) - len(keep))})
    return Extra(np.concatenate(images), np.concatenate(labels), summary)

